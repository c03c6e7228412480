/**
 * Serialises CLI calls on one workspace: an exclusive lock file holding the owner's pid. A lock left by a
 * process that died is stale and taken over, so a crashed call never wedges the workspace.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroagentError } from '../../errors.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function tryTake(path: string): Promise<boolean> {
  try {
    const fh = await open(path, 'wx', 0o600);
    await fh.writeFile(String(process.pid));
    await fh.close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && alive(owner)) return false;
    await rm(path, { force: true });
    return false;
  }
}

/** Runs `fn` holding the workspace lock; waits up to `timeoutMs` for another call to finish. */
export async function withWorkspaceLock<T>(path: string, name: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (!(await tryTake(path))) {
    if (Date.now() > deadline) {
      throw new MicroagentError('transient', `workspace "${name}" is busy with another microagent call`, {
        code: 'workspace.locked',
        remediation: 'wait for the other call to finish and try again',
      });
    }
    await sleep(50);
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

export { alive as processAlive };
