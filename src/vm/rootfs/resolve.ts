/**
 * resolveImage: reference in, cached ext4 root filesystem out. Opens the right source, finds the image
 * manifest for the guest platform, and returns the cache entry for its digest, building it under the
 * per-digest lock when missing. A registry reference pinned by digest that is already cached is served
 * without touching the network. Never returns a path to a partially built image.
 */
import { stat } from 'node:fs/promises';
import { MicroagentError } from '../../errors.js';
import type { BuildLimits } from './build.js';
import { digestHex } from './digest.js';
import { discardCacheEntry, freshWorkPath, manifestForIndex, readCachedImage, rememberIndexDigest, withBuildLock } from './image-cache.js';
import type { ImageConfig } from './image-config.js';
import type { ProgressListener } from './progress.js';
import { formatImageReference, parseImageReference, type ImageReference } from './reference.js';
import { openLayout } from './source-layout.js';
import type { RegistryOptions } from './source-registry.js';
import { selectImageManifest, type ImageSource } from './source.js';

export interface ResolveImageOptions extends RegistryOptions, BuildLimits {
  /** The microagent state directory; images are cached under `<stateDir>/images/`. */
  readonly stateDir: string;
  readonly onProgress?: ProgressListener;
}

export interface ResolvedImage {
  /** The image manifest digest (the cache key). */
  readonly digest: string;
  readonly config: ImageConfig;
  /** The cached base root filesystem; read-only by contract: give workspaces a copy (prepareWorkspaceDisk). */
  readonly rootfsPath: string;
  /** True when the image was already built and nothing was pulled or built. */
  readonly cached: boolean;
  /** The canonical reference it was resolved from. */
  readonly reference: string;
}

/**
 * The registry client (https, auth) and the archive reader (tar, decompression) load only for their own
 * kind of reference: the default image is a layout, and `run` waits for this on its way to the boot.
 */
async function openSource(ref: ImageReference, opts: ResolveImageOptions): Promise<ImageSource> {
  switch (ref.kind) {
    case 'registry':
      return (await import('./source-registry.js')).openRegistry(ref, opts);
    case 'layout':
      return openLayout(ref.path, ref.tag);
    case 'archive': {
      const { openArchive } = await import('./source-archive.js');
      return openArchive(ref.path, ref.format, await freshWorkPath(opts.stateDir, 'archive'), ref.tag);
    }
    case 'path': {
      const info = await stat(ref.path).catch(() => null);
      if (info === null) {
        throw new MicroagentError('not_found', `image path ${ref.path} does not exist`, {
          code: 'image.path_missing',
          remediation: 'Give the path of an OCI layout directory or an image archive (.tar).',
        });
      }
      if (info.isDirectory()) return openLayout(ref.path, undefined);
      const { openArchive } = await import('./source-archive.js');
      return openArchive(ref.path, 'auto', await freshWorkPath(opts.stateDir, 'archive'), undefined);
    }
    default: {
      const never: never = ref;
      throw new Error(`unhandled reference ${String(never)}`);
    }
  }
}

function resolved(cache: { digest: string; rootfsPath: string; record: { config: ImageConfig } }, cached: boolean, reference: string): ResolvedImage {
  return { digest: cache.digest, config: cache.record.config, rootfsPath: cache.rootfsPath, cached, reference };
}

/** Pulls or reads the image, builds its ext4 root filesystem once per manifest digest, and returns it. */
export async function resolveImage(reference: string | ImageReference, opts: ResolveImageOptions): Promise<ResolvedImage> {
  const ref = typeof reference === 'string' ? parseImageReference(reference) : reference;
  const text = formatImageReference(ref);
  opts.onProgress?.({ kind: 'resolve', reference: text });
  if (ref.kind === 'registry' && ref.digest !== undefined) {
    const hit = await readCachedImage(opts.stateDir, (await manifestForIndex(opts.stateDir, ref.digest)) ?? ref.digest);
    if (hit !== null) {
      opts.onProgress?.({ kind: 'cached', digest: hit.digest });
      opts.onProgress?.({ kind: 'done', digest: hit.digest, cached: true });
      return resolved(hit, true, text);
    }
  }
  const source = await openSource(ref, opts);
  try {
    const selected = await selectImageManifest(source);
    // A pinned index (verified by its digest) led to this manifest: the next such pin needs no network.
    if (ref.kind === 'registry' && ref.digest !== undefined && ref.digest !== selected.digest) await rememberIndexDigest(opts.stateDir, ref.digest, selected.digest);
    const hit = await readCachedImage(opts.stateDir, selected.digest);
    if (hit !== null) {
      opts.onProgress?.({ kind: 'cached', digest: hit.digest });
      opts.onProgress?.({ kind: 'done', digest: hit.digest, cached: true });
      return resolved(hit, true, text);
    }
    const result = await withBuildLock(opts.stateDir, selected.digest, async () => {
      const built = await readCachedImage(opts.stateDir, selected.digest);
      if (built !== null) return resolved(built, true, text);
      // A damaged entry would stay in the way of the fresh build's rename (and be taken for a
      // concurrent winner's): it goes first. A VM booted from it keeps its open file.
      await discardCacheEntry(opts.stateDir, selected.digest);
      // The builder (layers, whiteouts, mke2fs) loads only on a miss: a cached image, every `run` after
      // the first, would pay ~15 ms of module loading on its way to the boot.
      const { buildImage } = await import('./build.js');
      await buildImage({ stateDir: opts.stateDir, source, selected, reference: text, limits: opts, onProgress: opts.onProgress });
      const fresh = await readCachedImage(opts.stateDir, selected.digest);
      if (fresh === null) {
        throw new MicroagentError('internal', `image ${digestHex(selected.digest).slice(0, 12)} was built but its cache entry is unreadable`, {
          remediation: 'Check the state directory for disk errors and retry.',
        });
      }
      return resolved(fresh, false, text);
    });
    opts.onProgress?.({ kind: 'done', digest: result.digest, cached: result.cached });
    return result;
  } finally {
    await source.close();
  }
}
