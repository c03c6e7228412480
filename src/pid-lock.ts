/**
 * Cross-process lock files holding the owner's pid and the host's boot id, shared by the audit writer
 * (one writer per log), the workspace lock (one CLI call per workspace) and the image cache (one
 * build per digest). Taken atomically (written under a temporary name, then hard-linked into place,
 * which fails if it exists); a lock whose process is gone (exited, a zombie, or of an earlier boot) is
 * taken over, so a crash never wedges anything. Never removes a lock held by a live process.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MicroagentError } from './errors.js';

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else; only ESRCH means gone.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return !isZombie(pid);
}

/**
 * A process that exited but was not reaped still answers kill(pid, 0). A detached supervisor's
 * parent is init, and where init does not reap (a container whose PID 1 is an ordinary program), a
 * dead supervisor would stay alive to us forever: its workspace "running", its locks held.
 */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The state follows the command name, which is in parentheses and may itself hold ") ".
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return false; // no /proc (or it just went): kill's answer stands
  }
}

/** This boot of the host: a pid recorded in an earlier one names, at best, an unrelated process now. */
export const HOST_BOOT_ID = readBootId();

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/** Whether `pid`, recorded during host boot `bootId` (undefined: a record from before boots were kept), still runs. */
export function recordedProcessAlive(pid: number, bootId: string | undefined): boolean {
  return (bootId === undefined || bootId === HOST_BOOT_ID) && processAlive(pid);
}

/** The live pid holding the lock, or null (no lock, unreadable, or its holder is gone). Lock files hold `PID BOOT_ID`. */
async function liveHolderOf(lockPath: string): Promise<number | null> {
  const text = await readFile(lockPath, 'utf8').catch(() => null);
  const [pidText, bootId] = (text ?? '').trim().split(' ');
  const pid = Number(pidText);
  return Number.isSafeInteger(pid) && pid > 0 && recordedProcessAlive(pid, bootId) ? pid : null;
}

export type LockAttempt = { readonly release: () => Promise<void> } | { readonly holder: number };

/** One attempt: the lock and its release, or the live pid holding it. */
export async function takePidLock(lockPath: string): Promise<LockAttempt> {
  // Unique per attempt: one process may try several locks in the same directory at once.
  const temp = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${process.pid} ${HOST_BOOT_ID}\n`, { mode: 0o600 });
  try {
    for (;;) {
      try {
        await link(temp, lockPath);
        return {
          release: async () => {
            if ((await liveHolderOf(lockPath)) === process.pid) await unlink(lockPath).catch(() => undefined);
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await liveHolderOf(lockPath);
      if (holder !== null) return { holder };
      await unlink(lockPath).catch(() => undefined); // left by a process that is gone
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/** Runs `fn` holding the lock, waiting up to `timeoutMs` for a live holder; `busy` makes the timeout error. */
export async function withPidLock<T>(
  lockPath: string,
  timeoutMs: number,
  busy: (holder: number) => MicroagentError,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const attempt = await takePidLock(lockPath);
    if ('release' in attempt) {
      try {
        return await fn();
      } finally {
        await attempt.release();
      }
    }
    if (Date.now() > deadline) throw busy(attempt.holder);
    await sleep(50);
  }
}
