/**
 * The writer against real files: group commit under 10,000 concurrent appends, backpressure,
 * rotation and reopening keep one chain, a damaged tail is refused (or sealed and acknowledged),
 * and nothing outside the schema (no secret) is ever written.
 */
import { randomBytes } from 'node:crypto';
import fs, { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openAuditLog, readAuditRecords, verifyAuditLog, type AuditLog, type AuditRecord } from '../../src/audit/index.js';
import { MicroagentError } from '../../src/errors.js';
import { CLI, cli, decision, holdSyncs, parse, readLines, tempDir, until, writeLog } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let log: string;
beforeEach(() => {
  dir = tempDir();
  log = join(dir.path, 'audit.jsonl');
});
afterEach(() => {
  vi.restoreAllMocks();
  dir.cleanup();
});

async function records(path: string): Promise<AuditRecord[]> {
  const all: AuditRecord[] = [];
  for await (const r of readAuditRecords(path)) all.push(r);
  return all;
}

describe('group commit', () => {
  it('10,000 concurrent appends are all durable, in call order, in a valid chain, with few syncs', async () => {
    // The writer imports fdatasync by name: spy on node's fs object and push it to the ESM binding.
    const datasync = vi.spyOn(fs, 'fdatasync');
    syncBuiltinESMExports();
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', maxPending: 1000 });
    await Promise.all(Array.from({ length: 10_000 }, (_, i) => audit.append(decision(i))));
    const syncs = datasync.mock.calls.length;
    datasync.mockRestore();
    syncBuiltinESMExports();
    await audit.close();
    const all = await records(log);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 10_000 }, (_, i) => i + 1));
    expect(all.map((r) => (r as { conn?: string }).conn)).toEqual(Array.from({ length: 10_000 }, (_, i) => `c${i}`));
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 10_000 });
    // One sync per batch, not per record (backpressure caps a batch at maxPending records).
    expect(syncs).toBeGreaterThanOrEqual(10);
    expect(syncs).toBeLessThan(1000);
  });

  it('an append resolves only after its record is in the file', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    const seen: boolean[] = [];
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        audit.append(decision(i)).then(() => seen.push(readFileSync(log, 'utf8').includes(`"conn":"c${i}",`))),
      ),
    );
    await audit.close();
    expect(seen).toHaveLength(200);
    expect(seen.every(Boolean)).toBe(true);
  });

  describe('while an fdatasync is in flight', () => {
    /** Runs `body` against a new log with every fdatasync held until `syncs.release()`. */
    async function withHeldSyncs(body: (syncs: ReturnType<typeof holdSyncs>, audit: AuditLog) => Promise<void>, rotateBytes?: number): Promise<void> {
      const syncs = holdSyncs();
      try {
        await body(syncs, await openAuditLog({ path: log, workspace: 'ws-audit', ...(rotateBytes === undefined ? {} : { rotateBytes }) }));
      } finally {
        syncs.restore();
      }
    }
    const settledYet = async (p: Promise<void>): Promise<boolean> => {
      let settled = false;
      void p.then(() => (settled = true), () => (settled = true));
      await new Promise((r) => setTimeout(r, 20));
      return settled;
    };

    it('a `written` append resolves once its record is in the file, and a sync covers it unasked', () =>
      withHeldSyncs(async (syncs, audit) => {
        const durable = audit.append(decision(0));
        await until(() => syncs.held() === 1, 'an fdatasync');
        await audit.append(decision(1), 'written');
        expect(readFileSync(log, 'utf8')).toContain('"conn":"c1",');
        expect(await settledYet(durable)).toBe(false);
        syncs.release();
        await durable;
        // The written record dirtied the file: the lazy sync follows without another append.
        await until(() => syncs.held() === 1, 'an fdatasync');
        syncs.release();
        await audit.close();
        expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 2 });
      }));

    it('`written` records start no sync of their own: a durable append\'s sync or the lazy one a moment later covers them', () =>
      withHeldSyncs(async (syncs, audit) => {
        // Checked in the same turn as the writes: the lazy sync's timer cannot have fired yet.
        await Promise.all([audit.append(decision(0), 'written'), audit.append(decision(1), 'written')]);
        expect(syncs.held()).toBe(0);
        const durable = audit.append(decision(2));
        await Promise.resolve();
        expect(syncs.held()).toBe(1);
        syncs.release();
        await durable;
        // Nothing is left unsynced, so no lazy sync follows; a new written record gets one.
        await new Promise((r) => setTimeout(r, 20));
        expect(syncs.held()).toBe(0);
        await audit.append(decision(3), 'written');
        await until(() => syncs.held() === 1, 'the lazy fdatasync');
        syncs.release();
        await audit.close();
        expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 4 });
      }));

    it('a durable append is written at once but resolves only after a sync that started after its write', () =>
      withHeldSyncs(async (syncs, audit) => {
        const first = audit.append(decision(0));
        await until(() => syncs.held() === 1, 'an fdatasync');
        const second = audit.append(decision(1));
        await until(() => readFileSync(log, 'utf8').includes('"conn":"c1",'), 'the second record in the file');
        syncs.release();
        await first;
        expect(await settledYet(second)).toBe(false);
        await until(() => syncs.held() === 1, 'an fdatasync');
        syncs.release();
        await second;
        await audit.close();
      }));

    it('a rotation syncs the records written during the sync in flight before it seals the segment', () =>
      withHeldSyncs(async (syncs, audit) => {
        const durable = audit.append(decision(0));
        await until(() => syncs.held() === 1, 'an fdatasync');
        // `written` records are written while that sync is held, past rotateBytes: the rotation waits for the sync.
        const written = Array.from({ length: 20 }, (_, i) => audit.append(decision(i + 1), 'written'));
        await until(() => fs.statSync(log).size >= 4096, 'the file past rotateBytes');
        syncs.release();
        await durable;
        // That sync did not cover the records written during it: another one runs before the rename.
        await until(() => syncs.held() === 1, 'the sync of the records written meanwhile');
        expect(fs.existsSync(`${log}.000001`)).toBe(false);
        syncs.release();
        await until(() => fs.existsSync(`${log}.000001`), 'the sealed segment');
        // The rest land in the new file; keep letting syncs through until close() has ended.
        let closed = false;
        const closing = Promise.all(written).then(() => audit.close()).finally(() => (closed = true));
        while (!closed) {
          syncs.release();
          await new Promise((r) => setTimeout(r, 5));
        }
        await closing; // rejects if the log failed on the way
        expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 21 });
      }, 4096));

    it('a failed fdatasync rejects the appends waiting for it and fails the sink', async () => {
      const failing = vi.spyOn(fs, 'fdatasync').mockImplementation(((_fd: number, cb: (err: Error | null) => void) => {
        setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
      }) as typeof fs.fdatasync);
      syncBuiltinESMExports();
      try {
        const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
        const written = audit.append(decision(0), 'written');
        const durable = audit.append(decision(1));
        await written;
        await expect(durable).rejects.toMatchObject({ code: 'audit.write_failed' });
        await expect(audit.append(decision(2), 'written')).rejects.toMatchObject({ code: 'audit.write_failed' });
        expect(audit.healthy).toBe(false);
        await audit.close();
      } finally {
        failing.mockRestore();
        syncBuiltinESMExports();
      }
    });
  });

  it('backpressure makes callers wait instead of dropping (maxPending 4, 500 appends)', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', maxPending: 4, fsync: false });
    const pending = Array.from({ length: 500 }, (_, i) => {
      const event = { ...decision(i) };
      const appended = audit.append(event);
      event.conn = 'changed-after-append'; // a waiting record was encoded when append() was called
      return appended;
    });
    await Promise.all(pending);
    await audit.close();
    expect((await records(log)).map((r) => (r as { conn?: string }).conn)).toEqual(Array.from({ length: 500 }, (_, i) => `c${i}`));
  });

  it('close() flushes appends still queued and then refuses new ones', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', maxPending: 16 });
    const pending = Array.from({ length: 100 }, (_, i) => audit.append(decision(i)));
    const closing = audit.close();
    await expect(audit.append(decision(100))).rejects.toMatchObject({ code: 'audit.closed' });
    await closing;
    await Promise.all(pending);
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 100 });
  });

  it('ts is RFC 3339 UTC with milliseconds and never goes backwards', async () => {
    await writeLog({ path: log }, 300);
    const all = await records(log);
    for (const r of all) expect(r.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(all.map((r) => r.ts)).toEqual([...all.map((r) => r.ts)].sort());
  });
});

describe('the record contract', () => {
  it('writes only schema fields, in the fixed order: a stray secret value never reaches the file', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', workspaceId: 'wid-1', runtimeId: 'rt-1' });
    const withSecret = { ...decision(0, { secret_names: ['GITHUB_TOKEN'] }), secret_value: 'ghp_SUPERSECRET', headers: { authorization: 'Bearer x' } };
    await audit.append(withSecret as never);
    await audit.close();
    const text = readFileSync(log, 'utf8');
    expect(text).not.toContain('SUPERSECRET');
    expect(text).not.toContain('Bearer');
    expect(text).toContain('"secret_names":["GITHUB_TOKEN"]');
    expect(Object.keys(parse(text.trim()))).toEqual([
      'v', 'seq', 'ts', 'workspace', 'workspace_id', 'runtime_id', 'event', 'conn', 'protocol', 'host', 'port',
      'decrypted', 'verdict', 'rule', 'reason', 'signals', 'mode', 'policy_hash', 'secret_names', 'prev', 'hash',
    ]);
    expect((await verifyAuditLog(log)).ok).toBe(true);
  });

  it('rejects malformed events and writer-only events without failing the sink', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    await expect(audit.append(decision(0, { port: Number.NaN }))).rejects.toMatchObject({ code: 'audit.invalid_record' });
    await expect(audit.append({ event: 'no.such' } as never)).rejects.toMatchObject({ code: 'audit.invalid_record' });
    const forged = { event: 'audit.checkpoint', algorithm: 'hmac-sha256', key_id: 'x', upto_seq: 0, upto_hash: '0'.repeat(64), final: true, signature: '00' };
    await expect(audit.append(forged as never)).rejects.toMatchObject({ code: 'audit.invalid_record' });
    expect(audit.healthy).toBe(true);
    await audit.append({ event: 'lifecycle.start', state: 'running', detail: 'ünïcode "quoted" \\ line\nbreak' });
    await audit.close();
    expect(audit.healthy).toBe(false);
    await expect(audit.append(decision(1))).rejects.toMatchObject({ code: 'audit.closed' });
    const all = await records(log);
    expect(all).toHaveLength(1);
    expect(all[0]).toMatchObject({ seq: 1, detail: 'ünïcode "quoted" \\ line\nbreak' });
    expect((await verifyAuditLog(log)).ok).toBe(true);
  });

  it('refuses a second writer on the same log in one process, and another workspace\'s chain', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    await expect(openAuditLog({ path: log, workspace: 'ws-audit' })).rejects.toMatchObject({
      code: 'audit.locked',
      message: expect.stringContaining('already open in this process'),
    });
    await audit.close();
    const again = await openAuditLog({ path: log, workspace: 'ws-audit' });
    await again.append(decision(0));
    await again.close();
    await expect(openAuditLog({ path: log, workspace: 'other' })).rejects.toMatchObject({ code: 'audit.workspace_mismatch' });
  });
});

describe('one writer across processes', () => {
  it('a live writer in another process holds the log; its lock is taken over once that process is gone', async () => {
    const script = `import { openAuditLog } from ${JSON.stringify(pathToFileURL(join(CLI, '../../audit/index.js')).href)};
      const log = await openAuditLog({ path: ${JSON.stringify(log)}, workspace: 'ws-audit' });
      await log.append({ event: 'lifecycle.start', state: 'running' });
      process.stdout.write('open\\n'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((resolve) => child.on('exit', resolve));
    try {
      await until(() => out.includes('open'), 'the other writer');
      await expect(openAuditLog({ path: log, workspace: 'ws-audit' })).rejects.toMatchObject({
        kind: 'conflict',
        code: 'audit.locked',
        message: expect.stringContaining(`being written by process ${child.pid}`),
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    // The killed writer never closed: its lock is stale and its record is there to continue from.
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    await audit.append(decision(1));
    await audit.close();
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 2 });
    expect(readdirSync(dir.path).sort()).toEqual(['audit.jsonl']);
  });
});

describe('rotation and reopening', () => {
  it('rotation seals numbered segments and the chain runs across them', async () => {
    await writeLog({ path: log, rotateBytes: 8 * 1024 }, 400);
    const files = readdirSync(dir.path).sort();
    expect(files.length).toBeGreaterThan(5);
    expect(files.some((f) => f.includes('lock'))).toBe(false);
    expect(files[0]).toBe('audit.jsonl');
    expect(files[1]).toBe('audit.jsonl.000001');
    const first = readLines(join(dir.path, 'audit.jsonl.000002'))[0] as string;
    const lastOfPrevious = readLines(join(dir.path, 'audit.jsonl.000001')).at(-1) as string;
    expect(parse(first).prev).toBe(parse(lastOfPrevious).hash);
    const r = await verifyAuditLog(log);
    expect(r).toMatchObject({ ok: true, records: 400 });
    expect(r.files).toHaveLength(files.length);
  });

  it('written and durable appends mixed across rotations: every record lands, in order, and close() ends it', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', rotateBytes: 8 * 1024 });
    await Promise.all(Array.from({ length: 400 }, (_, i) => audit.append(decision(i), i % 3 === 0 ? 'durable' : 'written')));
    await audit.append(decision(400), 'written');
    await audit.close();
    expect(readdirSync(dir.path).length).toBeGreaterThan(5);
    expect((await records(log)).map((r) => (r as { conn?: string }).conn)).toEqual(Array.from({ length: 401 }, (_, i) => `c${i}`));
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 401 });
  });

  it('a deleted middle segment is named by the file and line where the gap shows', async () => {
    await writeLog({ path: log, rotateBytes: 8 * 1024 }, 400);
    const gone = readLines(join(dir.path, 'audit.jsonl.000002'));
    writeFileSync(join(dir.path, 'audit.jsonl.000002'), '');
    const r = await verifyAuditLog(log);
    expect(r.firstBad).toMatchObject({ file: join(dir.path, 'audit.jsonl.000003'), line: 1 });
    expect(r.firstBad?.problem).toContain(`${parse(gone[0] as string).seq}..${parse(gone.at(-1) as string).seq} are missing`);
  });

  it('reopening continues the chain (seq and prev), also from a sealed segment', async () => {
    await writeLog({ path: log, rotateBytes: 4096 }, 100);
    const before = await verifyAuditLog(log);
    await writeLog({ path: log, rotateBytes: 4096 }, 1);
    const after = await records(log);
    const added = after.at(-1) as AuditRecord;
    expect(added).toMatchObject({ seq: before.lastSeq + 1, prev: before.lastHash });
    // An empty active file (a crash between rotation's rename and create) resumes from the segment.
    writeFileSync(log, '');
    const keep = await verifyAuditLog(log);
    expect(keep.ok).toBe(true);
    await writeLog({ path: log }, 1);
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: keep.records + 1 });
  });

  it('a torn tail is refused on reopen; new_segment seals it and verify accepts the acknowledged damage', async () => {
    await writeLog({ path: log }, 20);
    appendFileSync(log, '{"v":1,"seq":21,"ts":"2026-');
    await expect(openAuditLog({ path: log, workspace: 'ws-audit' })).rejects.toMatchObject({
      kind: 'conflict',
      code: 'audit.corrupt_tail',
      message: expect.stringContaining('torn record'),
    });
    expect((await verifyAuditLog(log)).firstBad).toMatchObject({ line: 21, seq: 21, problem: expect.stringMatching(/torn/) });
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', onCorruptTail: 'new_segment' });
    await audit.append(decision(99));
    await audit.close();
    expect(readFileSync(join(dir.path, 'audit.jsonl.000001'), 'utf8')).toMatch(/"seq":21,"ts":"2026-$/);
    const all = await records(log);
    expect(all.slice(-2)).toMatchObject([
      { seq: 21, event: 'audit.recovery', file: 'audit.jsonl.000001', line: 21, discarded_bytes: 27 },
      { seq: 22, conn: 'c99' },
    ]);
    const r = await verifyAuditLog(log);
    expect(r).toMatchObject({ ok: true, records: 22, recoveries: [{ line: 21, discardedBytes: 27 }] });
    const run = cli(['audit', 'verify', log]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('audit.jsonl.000001:21: damaged tail');
  });

  it('an edited last record is refused too, and a forged recovery record does not excuse damage', async () => {
    await writeLog({ path: log }, 10);
    const lines = readLines(log);
    lines[9] = (lines[9] as string).replace('"port":443', '"port":444');
    writeFileSync(log, lines.map((l) => l + '\n').join(''));
    await expect(openAuditLog({ path: log, workspace: 'ws-audit' })).rejects.toMatchObject({ code: 'audit.corrupt_tail' });
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', onCorruptTail: 'new_segment' });
    await audit.close();
    expect((await verifyAuditLog(log)).ok).toBe(true);
    // The recovery must match the damage exactly: claim one byte less and verify names the damage.
    const active = readLines(log);
    writeFileSync(log, active.map((l) => l.replace(/"discarded_bytes":(\d+)/, (_m, n: string) => `"discarded_bytes":${Number(n) - 1}`)).join('\n') + '\n');
    const r = await verifyAuditLog(log);
    expect(r.firstBad?.file).toBe(join(dir.path, 'audit.jsonl.000001'));
    expect(r.firstBad?.line).toBe(10);
  });

  it('signed logs reopen and keep signing; verify --key passes across sessions', async () => {
    const key = randomBytes(32);
    await writeLog({ path: log, checkpoint: { key, every: 7 }, rotateBytes: 4096 }, 50);
    await writeLog({ path: log, checkpoint: { key, every: 7 }, rotateBytes: 4096 }, 50);
    const r = await verifyAuditLog(log, { key });
    expect(r.ok).toBe(true);
    expect(r.unsignedTail).toBe(0);
    expect(r.checkpoints).toBe(7 + 7 + 2);
  });

  it('open errors are typed', async () => {
    writeFileSync(join(dir.path, 'file'), 'x');
    const err = await openAuditLog({ path: join(dir.path, 'file', 'audit.jsonl'), workspace: 'w' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MicroagentError);
    // A path through a file will not get better by retrying: invalid, not transient (exit 1, not 75).
    expect(err).toMatchObject({ kind: 'invalid', code: 'audit.write_failed', message: expect.stringContaining('(EEXIST') });
    await expect(openAuditLog({ path: log, workspace: 'w', checkpoint: { key: Buffer.alloc(8) } })).rejects.toMatchObject({ code: 'audit.bad_key' });
  });
});
