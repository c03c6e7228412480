/**
 * One writer per log, across processes: two writers would fork the chain, and verify would then
 * reject the log from the fork on. The lock is a file `<log>.lock` holding the writer's pid, created
 * atomically by src/pid-lock.ts; a lock whose process is gone is taken over.
 */
import { MicroagentError } from '../errors.js';
import { takePidLock } from '../pid-lock.js';

/** Takes the lock for `path` or throws `audit.locked`; returns the release function. */
export async function lockAuditLog(path: string): Promise<() => Promise<void>> {
  const lockPath = `${path}.lock`;
  const attempt = await takePidLock(lockPath);
  if ('release' in attempt) return attempt.release;
  const { holder } = attempt;
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
