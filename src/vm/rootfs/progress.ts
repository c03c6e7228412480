/**
 * Progress events of a pull and build, for the CLI to render (it owns all output; this module only emits).
 * A listener must be cheap and must not throw: it is called on the data path.
 */
export type ImageProgressEvent =
  | { readonly kind: 'resolve'; readonly reference: string }
  | { readonly kind: 'cached'; readonly digest: string }
  /** Bytes of layer `index` (1-based) of `count` read so far; emitted at 0, every MiB, and at the end. */
  | { readonly kind: 'layer'; readonly index: number; readonly count: number; readonly digest: string; readonly bytes: number; readonly totalBytes: number }
  | { readonly kind: 'filesystem'; readonly digest: string }
  | { readonly kind: 'done'; readonly digest: string; readonly cached: boolean };

export type ProgressListener = (event: ImageProgressEvent) => void;
