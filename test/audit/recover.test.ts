/**
 * `microagent audit recover`: a log ending in a damaged record (torn by a crash or a full disk, or
 * edited) is set aside without losing a byte, and the log can be written again; anything else is left
 * alone or refused with the reason. Real files, the built CLI and the library.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditLog, readAuditRecords, recoverAuditLog, verifyAuditLog, type AuditRecord } from '../../src/audit/index.js';
import { cli, decision, readLines, tempDir, writeLines, writeLog } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let log: string;
beforeEach(() => {
  dir = tempDir();
  log = join(dir.path, 'audit.jsonl');
});
afterEach(() => dir.cleanup());

async function records(): Promise<AuditRecord[]> {
  const all: AuditRecord[] = [];
  for await (const r of readAuditRecords(log)) all.push(r);
  return all;
}

describe('audit recover', () => {
  it('seals a torn tail as it is, continues the chain after a recovery record, and the log takes appends again', async () => {
    await writeLog({ path: log, workspaceId: 'id-1' }, 20);
    const torn = '{"v":1,"seq":21,"ts":"2026-';
    appendFileSync(log, torn);
    const size = readFileSync(log).length;
    await expect(openAuditLog({ path: log, workspace: 'ws-audit' })).rejects.toMatchObject({
      code: 'audit.corrupt_tail',
      remediation: expect.stringContaining(`"microagent audit recover ${log}"`),
    });

    const run = cli(['audit', 'recover', log]);
    expect(run.stdout).toBe(
      `recovered ${log}: audit.jsonl at byte ${size - torn.length} of ${size}: torn record: the last line has no newline\n` +
        `  the damaged file is kept as audit.jsonl.000001 (from line 21, ${torn.length} bytes set aside); logging continues after seq 20, the recovery record is seq 21\n`,
    );
    expect(run.code).toBe(0);
    expect(readFileSync(`${log}.000001`, 'utf8').endsWith(torn)).toBe(true);

    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', workspaceId: 'id-1' });
    await audit.append(decision(99));
    await audit.close();
    expect((await records()).slice(-2)).toMatchObject([
      { seq: 21, event: 'audit.recovery', workspace_id: 'id-1', file: 'audit.jsonl.000001', line: 21, discarded_bytes: torn.length },
      { seq: 22, conn: 'c99' },
    ]);
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 22, recoveries: [{ line: 21, discardedBytes: torn.length }] });

    const again = cli(['audit', 'recover', log]);
    expect(again).toMatchObject({ code: 0, stdout: `nothing to recover: ${log} ends in an intact record (seq 22)\n` });
  });

  it('sets aside an edited last record too', async () => {
    await writeLog({ path: log }, 5);
    const lines = readLines(log);
    lines[4] = (lines[4] as string).replace('"conn":"c4"', '"conn":"cX"');
    writeLines(log, lines);
    expect(cli(['audit', 'recover', log]).code).toBe(0);
    expect((await records()).at(-1)).toMatchObject({ seq: 5, event: 'audit.recovery', line: 5 });
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, recoveries: [{ line: 5 }] });
  });

  it('refuses the log of a live writer, and needs --workspace when no intact record names it', async () => {
    await writeLog({ path: log }, 3);
    appendFileSync(log, '{"v":1,"seq":4');
    const { release } = await holdWriterLock();
    try {
      await expect(recoverAuditLog(log)).rejects.toMatchObject({ code: 'audit.locked' });
    } finally {
      await release();
    }

    writeFileSync(log, '{"v":1,"seq":1,"ts"');
    const nameless = cli(['audit', 'recover', log]);
    expect(nameless.stderr).toBe(`error: audit log ${log} has no intact record left to take its workspace name from\n  fix: pass --workspace NAME, the workspace the log belongs to\n`);
    expect(nameless.code).toBe(1);
    expect(cli(['audit', 'recover', log, '--workspace', 'ws-audit']).code).toBe(0);
    expect(await records()).toMatchObject([{ seq: 1, workspace: 'ws-audit', event: 'audit.recovery', line: 1 }]);
  });
});

/** Another process's lock on the log, as a running workspace's supervisor holds it. */
async function holdWriterLock(): Promise<{ release: () => Promise<void> }> {
  const sleeper = spawn('sleep', ['30']);
  writeFileSync(`${log}.lock`, `${sleeper.pid}\n`);
  return {
    release: async () => {
      sleeper.kill();
      rmSync(`${log}.lock`);
    },
  };
}
