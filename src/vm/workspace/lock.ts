/**
 * Serialises CLI calls on one workspace with a pid lock file; a lock left by a call that crashed is
 * taken over, so a crashed call never wedges the workspace.
 */
import { MicroagentError } from '../../errors.js';
import { withPidLock } from '../../pid-lock.js';
import { workspaceNotFound, workspacePaths } from './store.js';

export { processAlive, recordedProcessAlive } from '../../pid-lock.js';

/**
 * Runs `fn` holding the workspace's lock; waits up to `timeoutMs` for another call to finish. The lock
 * file lives in the workspace's directory, so a workspace that does not exist (or was deleted while
 * this call waited) fails taking it: that is reported as the missing workspace, not as a file error.
 */
export async function withWorkspaceLock<T>(stateDir: string, name: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const busy = (holder: number) =>
    new MicroagentError('transient', `workspace "${name}" is busy with another microagent call (pid ${holder})`, {
      code: 'workspace.locked',
      remediation: 'wait for the other call to finish and try again',
    });
  let locked = false;
  try {
    return await withPidLock(workspacePaths(stateDir, name).lock, timeoutMs, busy, () => {
      locked = true;
      return fn();
    });
  } catch (err) {
    if (!locked && (err as NodeJS.ErrnoException).code === 'ENOENT') throw workspaceNotFound(stateDir, name);
    throw err;
  }
}
