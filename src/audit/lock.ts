/**
 * One writer per log, across processes: two writers would fork the chain, and verify would then
 * reject the log from the fork on. The lock is a file `<log>.lock` holding the writer's pid, created
 * atomically (written under a temporary name, then hard-linked into place, which fails if it exists).
 * A lock whose process is gone is taken over. Never removes a lock held by a live process.
 */
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else; only ESRCH means gone.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function holderOf(lockPath: string): Promise<number | null> {
  const text = await readFile(lockPath, 'utf8').catch(() => null);
  const pid = text === null ? NaN : Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/** Takes the lock for `path` or throws `audit.locked`; returns the release function. */
export async function lockAuditLog(path: string): Promise<() => Promise<void>> {
  const lockPath = `${path}.lock`;
  const temp = `${lockPath}.${process.pid}.tmp`;
  await writeFile(temp, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(temp, lockPath);
        return async () => {
          if ((await holderOf(lockPath)) === process.pid) await unlink(lockPath).catch(() => undefined);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await holderOf(lockPath);
      if (holder !== null && alive(holder)) {
        throw new MicroagentError(
          'conflict',
          holder === process.pid
            ? `audit log ${path} is already open in this process`
            : `audit log ${path} is being written by process ${holder}`,
          {
            code: 'audit.locked',
            remediation:
              holder === process.pid
                ? 'Share the AuditLog returned by the first openAuditLog call.'
                : `Give each workspace component the same AuditLog, or stop process ${holder}. If no microagent process runs, remove ${lockPath}.`,
          },
        );
      }
      await unlink(lockPath).catch(() => undefined); // left by a process that is gone
    }
    throw new MicroagentError('conflict', `could not take the lock ${lockPath}: another writer keeps taking it`, {
      code: 'audit.locked',
      remediation: 'Make sure only one process writes this audit log.',
    });
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
