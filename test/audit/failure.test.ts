/**
 * Fail closed: when the log cannot be written (a full disk, a deleted file or directory, a closed
 * descriptor), every pending and later append rejects with audit.write_failed and the sink reports
 * unhealthy. Uses a real 64 KiB tmpfs (we run as root); skips only if mounting is impossible.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openAuditLog, verifyAuditLog, type AuditLog } from '../../src/audit/index.js';
import { MicroagentError } from '../../src/errors.js';
import { decision, tempDir } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => dir.cleanup());

async function expectFailedSink(audit: AuditLog, rejection: unknown): Promise<void> {
  expect(rejection).toBeInstanceOf(MicroagentError);
  expect(rejection).toMatchObject({ kind: 'transient', code: 'audit.write_failed' });
  expect(audit.healthy).toBe(false);
  // Stays failed: a later append rejects at once, the same way.
  await expect(audit.append(decision(0))).rejects.toMatchObject({ code: 'audit.write_failed' });
  await audit.close();
}

describe('a full disk', () => {
  const mnt = { path: '', mounted: false, why: '' };
  beforeAll(() => {
    mnt.path = tempDir('audit-tmpfs-').path;
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt.path], { encoding: 'utf8' });
    mnt.mounted = r.status === 0;
    mnt.why = r.stderr || String(r.error);
  });
  afterAll(() => {
    if (mnt.mounted) spawnSync('umount', [mnt.path]);
    rmSync(mnt.path, { recursive: true, force: true });
  });

  it('ENOSPC rejects the pending and every later append; acknowledged records all verify', async (ctx) => {
    if (!mnt.mounted) ctx.skip(`cannot mount a tmpfs: ${mnt.why}`);
    const path = join(mnt.path, 'audit.jsonl');
    const audit = await openAuditLog({ path, workspace: 'ws-audit' });
    let acknowledged = 0;
    let rejection: unknown = null;
    // Bursts of 20 concurrent appends until the disk is full.
    for (let burst = 0; rejection === null && burst < 1000; burst++) {
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => audit.append(decision(burst * 20 + i))));
      for (const r of results) {
        if (r.status === 'fulfilled') acknowledged++;
        else rejection ??= r.reason;
      }
    }
    expect(acknowledged).toBeGreaterThan(50);
    await expectFailedSink(audit, rejection);
    // Every record that was acknowledged is on disk and intact; at most a torn tail follows it.
    const v = await verifyAuditLog(path);
    expect(v.records).toBeGreaterThanOrEqual(acknowledged);
    if (!v.ok) expect(v.firstBad?.line).toBeGreaterThan(acknowledged);
    // Once space is freed, the log still refuses to be appended to after a damaged tail.
    expect(spawnSync('mount', ['-o', 'remount,size=1m', mnt.path]).status).toBe(0);
    const reopened = openAuditLog({ path, workspace: 'ws-audit' });
    if (v.ok) await (await reopened).close();
    else await expect(reopened).rejects.toMatchObject({ code: 'audit.corrupt_tail' });
  });
});

describe('the file or directory going away', () => {
  it('a deleted audit directory fails the next append', async () => {
    const logDir = join(dir.path, 'logs');
    const audit = await openAuditLog({ path: join(logDir, 'audit.jsonl'), workspace: 'ws-audit' });
    await audit.append(decision(0));
    rmSync(logDir, { recursive: true });
    const rejection = await audit.append(decision(1)).catch((e: unknown) => e);
    await expectFailedSink(audit, rejection);
    expect((rejection as Error).message).toContain('ENOENT');
  });

  it('a moved audit directory fails at the next rotation; records before it stay acknowledged', async () => {
    const logDir = join(dir.path, 'logs');
    mkdirSync(logDir);
    const audit = await openAuditLog({ path: join(logDir, 'audit.jsonl'), workspace: 'ws-audit', rotateBytes: 2000 });
    await audit.append(decision(0));
    renameSync(logDir, `${logDir}.moved`);
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => audit.append(decision(i + 1))));
    const rejected = results.filter((r) => r.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    expect(results.findIndex((r) => r.status === 'rejected')).toBe(results.length - rejected.length);
    await expectFailedSink(audit, (rejected[0] as PromiseRejectedResult).reason);
    expect(((rejected[0] as PromiseRejectedResult).reason as Error).message).toContain('ENOENT');
    const acknowledged = results.length - rejected.length + 1;
    expect(await verifyAuditLog(join(`${logDir}.moved`, 'audit.jsonl'))).toMatchObject({ ok: true, records: acknowledged });
  });

  it('a descriptor closed behind the writer (EBADF) fails closed', async () => {
    const path = join(dir.path, 'audit.jsonl');
    const audit = await openAuditLog({ path, workspace: 'ws-audit' });
    await audit.append(decision(0));
    const fd = readdirSync('/proc/self/fd').map(Number).find((n) => {
      try {
        return readlinkSync(`/proc/self/fd/${n}`) === path;
      } catch {
        return false;
      }
    });
    expect(fd).toBeDefined();
    closeSync(fd as number);
    const rejection = await audit.append(decision(1)).catch((e: unknown) => e);
    await expectFailedSink(audit, rejection);
    expect((rejection as Error).message).toContain('EBADF');
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, records: 1 });
  });
});
