/**
 * Readiness signals a workspace reports in `status`: each is observed, not assumed, and carries when it
 * was observed and why it is not ready.
 */
export interface Signal {
  readonly ready: boolean;
  readonly observedAt: string;
  readonly detail?: string;
  readonly error?: string;
}

export interface Readiness {
  guestReady: Signal;
  shellReady: Signal;
  execReady: Signal;
  resultReady: Signal;
  mediationReady: Signal;
}

export function observe(ready: boolean, detail?: string, error?: string): Signal {
  return {
    ready,
    observedAt: new Date().toISOString(),
    ...(detail === undefined ? {} : { detail }),
    ...(error === undefined ? {} : { error }),
  };
}

export function emptyReadiness(): Readiness {
  const no = observe(false, 'not observed yet');
  return { guestReady: no, shellReady: no, execReady: no, resultReady: no, mediationReady: no };
}
