/**
 * Serialises CLI calls on one workspace with a pid lock file; a lock left by a call that crashed is
 * taken over, so a crashed call never wedges the workspace.
 */
import { MicroagentError } from '../../errors.js';
import { withPidLock } from '../../pid-lock.js';

export { processAlive } from '../../pid-lock.js';

/** Runs `fn` holding the workspace lock; waits up to `timeoutMs` for another call to finish. */
export function withWorkspaceLock<T>(path: string, name: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const busy = (holder: number) =>
    new MicroagentError('transient', `workspace "${name}" is busy with another microagent call (pid ${holder})`, {
      code: 'workspace.locked',
      remediation: 'wait for the other call to finish and try again',
    });
  return withPidLock(path, timeoutMs, busy, fn);
}
