// Lock files and the liveness of the process holding them: a process that exited but was not reaped
// (where init does not reap, as in a container whose PID 1 is an ordinary program) is gone.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HOST_BOOT_ID, processAlive, takePidLock } from '../src/pid-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'pid-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A zombie: `sleep 0` exits at once, and its parent (exec'd into `sleep 5`) never waits for it. */
async function zombie(): Promise<{ pid: number; parent: () => void }> {
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
  for (let i = 0; i < 100 && !/\) Z /.test(readStat(pid)); i++) await new Promise((r) => setTimeout(r, 20));
  return { pid, parent: () => parent.kill('SIGKILL') };
}

function readStat(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return '';
  }
}

describe('processAlive', () => {
  it('is true for a running process and false for one that is gone', () => {
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(2 ** 22 + 1)).toBe(false);
  });

  it('is false for a zombie, which still answers kill(pid, 0)', async () => {
    const z = await zombie();
    try {
      expect(readStat(z.pid)).toMatch(/\) Z /);
      expect(() => process.kill(z.pid, 0)).not.toThrow();
      expect(processAlive(z.pid)).toBe(false);
    } finally {
      z.parent();
    }
  });

  it('a lock naming a live pid from an earlier boot of the host is taken over; one from this boot is not', async () => {
    const lock = join(dir, 'rebooted.lock');
    writeFileSync(lock, `${process.pid} 00000000-0000-0000-0000-000000000000\n`);
    const attempt = await takePidLock(lock);
    expect('release' in attempt).toBe(true);
    if ('release' in attempt) await attempt.release();
    writeFileSync(lock, `${process.ppid} ${HOST_BOOT_ID}\n`);
    expect(await takePidLock(lock)).toEqual({ holder: process.ppid });
    // Written before boots were kept: the pid alone decides.
    writeFileSync(lock, `${process.ppid}\n`);
    expect(await takePidLock(lock)).toEqual({ holder: process.ppid });
  });

  it('a lock held by a zombie is taken over', async () => {
    const z = await zombie();
    try {
      const lock = join(dir, 'held.lock');
      writeFileSync(lock, `${z.pid}\n`);
      const attempt = await takePidLock(lock);
      expect('release' in attempt).toBe(true);
      if ('release' in attempt) await attempt.release();
    } finally {
      z.parent();
    }
  });
});
