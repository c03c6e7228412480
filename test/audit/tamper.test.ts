/**
 * A real log written through the writer, then tampered with in each of the five ways; verify must
 * fail at the right record (file, line, seq), through the API and through the CLI (exit 1).
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditLog, verifyAuditLog } from '../../src/audit/index.js';
import { cli, decision, forgeLine, parse, readLines, rechain, tempDir, writeLines, writeLog } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let log: string;
beforeEach(() => {
  dir = tempDir();
  log = join(dir.path, 'audit.jsonl');
});
afterEach(() => dir.cleanup());

describe('an untouched log', () => {
  it('verifies, with its count and last hash, and the CLI exits 0', async () => {
    await writeLog({ path: log }, 50);
    const r = await verifyAuditLog(log);
    const lines = readLines(log);
    expect(r).toMatchObject({ ok: true, records: 50, lastSeq: 50, lastHash: parse(lines[49] as string).hash });
    expect(parse(lines[0] as string).prev).toBe('0'.repeat(64));
    const run = cli(['audit', 'verify', log]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`ok: 50 record(s)`);
    expect(run.stdout).toContain(r.lastHash);
  });
});

describe('the five tamperings', () => {
  beforeEach(async () => writeLog({ path: log }, 40));

  it('an edited field is named by line and seq', async () => {
    const lines = readLines(log);
    lines[11] = (lines[11] as string).replace('"verdict":"allow"', '"verdict":"deny"');
    expect(lines[11]).not.toBe(readLines(log)[11]);
    writeLines(log, lines);
    const r = await verifyAuditLog(log);
    expect(r.ok).toBe(false);
    expect(r.firstBad).toMatchObject({ file: log, line: 12, seq: 12 });
    expect(r.firstBad?.problem).toMatch(/edited/);
    expect(r.records).toBe(11);
  });

  it('a deleted record is named at the line where the gap shows', async () => {
    const lines = readLines(log);
    lines.splice(19, 1); // seq 20 gone
    writeLines(log, lines);
    const r = await verifyAuditLog(log);
    expect(r.firstBad).toMatchObject({ line: 20, seq: 21 });
    expect(r.firstBad?.problem).toMatch(/20\.\.20 are missing/);
  });

  it('a forged record with a valid own hash is caught where the chain breaks', async () => {
    const lines = readLines(log);
    const before = parse(lines[8] as string);
    // The strongest forger without the rest of the chain: seq and prev fit, hash is right.
    const forged = forgeLine(10, before.hash, before.ts, decision(2, { verdict: 'allow', rule: 'allow-dev', reason: 'rule_allow' }));
    lines.splice(9, 0, forged);
    writeLines(log, lines);
    const r = await verifyAuditLog(log);
    expect(r.firstBad).toMatchObject({ line: 11, seq: 10 });
    expect(r.firstBad?.problem).toMatch(/inserted/);
    // A naive forger (copied line, hash left alone) is caught at the forged line itself.
    lines.splice(9, 1, (lines[9] as string).replace('"conn":"c2"', '"conn":"c99"'));
    writeLines(log, lines);
    expect((await verifyAuditLog(log)).firstBad).toMatchObject({ line: 10, seq: 10, problem: expect.stringMatching(/edited/) });
  });

  it('two swapped records are named at the first of them', async () => {
    const lines = readLines(log);
    [lines[4], lines[5]] = [lines[5] as string, lines[4] as string];
    writeLines(log, lines);
    const r = await verifyAuditLog(log);
    expect(r.firstBad).toMatchObject({ line: 5, seq: 6 });
    expect(r.firstBad?.problem).toMatch(/seq 6 where 5 was expected: record\(s\) 5..5 are missing here \(deleted, or moved later\)/);
  });

  it('a truncated last line (torn write) is reported', async () => {
    const lines = readLines(log);
    writeFileSync(log, lines.slice(0, 39).map((l) => l + '\n').join('') + (lines[39] as string).slice(0, 50));
    const r = await verifyAuditLog(log);
    expect(r.firstBad).toMatchObject({ line: 40, seq: 40 });
    expect(r.firstBad?.problem).toMatch(/torn/);
  });

  it('a re-hashed chain is still checked for time order and one workspace', async () => {
    const lines = readLines(log);
    const early = parse(lines[6] as string).ts.replace(/^\d{4}/, '2001');
    lines[6] = (lines[6] as string).replace(/"ts":"[^"]+"/, `"ts":"${early}"`);
    writeLines(log, rechain(lines, 6));
    expect((await verifyAuditLog(log)).firstBad).toMatchObject({ line: 7, seq: 7, problem: expect.stringMatching(/^ts 2001-.* is earlier than/) });
    const other = readLines(log);
    other[6] = (lines[6] as string).replace('"ts":"2001', '"ts":"2999').replace('"workspace":"ws-audit"', '"workspace":"elsewhere"');
    writeLines(log, rechain(other, 6));
    expect((await verifyAuditLog(log)).firstBad).toMatchObject({ line: 7, problem: 'workspace "elsewhere" differs from "ws-audit"' });
  });

  it.each([
    ['"verdict":"allow"', '"verdict":"maybe"', /^verdict "maybe" is not allow, deny or would_deny$/],
    ['"reason":"rule_allow"', '"reason":"because"', /^reason "because" is not in the reason vocabulary$/],
    ['"signals":[]', '"signals":["trust_me"]', /^signals \["trust_me"\] hold a word outside the signal vocabulary$/],
  ])('a re-hashed record with %s made %s is refused: the vocabularies are closed', async (from, to, problem) => {
    const lines = readLines(log);
    const at = lines.findIndex((l) => l.includes(from));
    lines[at] = (lines[at] as string).replace(from, to);
    writeLines(log, rechain(lines, at));
    expect((await verifyAuditLog(log)).firstBad).toMatchObject({ line: at + 1, problem: expect.stringMatching(problem) });
  });

  it('the CLI exits 1 and names the file and line', async () => {
    const lines = readLines(log);
    lines[29] = (lines[29] as string).replace('"port":443', '"port":8443');
    writeLines(log, lines);
    const run = cli(['audit', 'verify', log]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`FAILED ${log}:30 (seq 30)`);
    const json = cli(['audit', 'verify', log, '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, firstBad: { file: log, line: 30, seq: 30 } });
  });
});

describe('any single changed byte', () => {
  it('is named at the line that holds it', async () => {
    await writeLog({ path: log, checkpoint: { key: randomBytes(32), every: 7 } }, 30);
    const original = readFileSync(log);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: original.length - 1 }), fc.integer({ min: 1, max: 255 }), async (offset, delta) => {
        const bytes = Buffer.from(original);
        bytes[offset] = ((bytes[offset] as number) + delta) % 256;
        writeFileSync(log, bytes);
        const line = original.subarray(0, offset).filter((b) => b === 10).length + 1;
        const r = await verifyAuditLog(log);
        expect(r.ok).toBe(false);
        expect(r.firstBad?.line).toBe(line);
      }),
      { numRuns: 150 },
    );
  });
});

describe('bytes that are not UTF-8', () => {
  it('are refused at their line even where they decode to the character they replaced (U+FFFD)', async () => {
    const key = randomBytes(32);
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', checkpoint: { key } });
    for (let i = 0; i < 5; i++) await audit.append(decision(i, i === 2 ? { path: '/caf\u00e9/\ufffd' } : {}));
    await audit.close();
    const original = readFileSync(log);
    const replacement = Buffer.from('\ufffd');
    const at = original.indexOf(replacement);
    // 0xFF is not UTF-8; decoded, it is U+FFFD again, so the text (and a hash over it) would not change.
    const tampered = Buffer.concat([original.subarray(0, at), Buffer.from([0xff]), original.subarray(at + replacement.length)]);
    writeFileSync(log, tampered);
    for (const r of [await verifyAuditLog(log), await verifyAuditLog(log, { key })]) {
      expect(r.ok).toBe(false);
      expect(r.firstBad).toMatchObject({ line: 3, seq: 3 });
      expect(r.firstBad?.problem).toMatch(/not valid UTF-8/);
    }
  });
});

describe('signed checkpoints', () => {
  const hmacKey = randomBytes(32);

  it('a rewritten chain passes the chain check but fails the signature check', async () => {
    await writeLog({ path: log, checkpoint: { key: hmacKey, every: 10 } }, 40);
    const lines = readLines(log);
    expect(lines).toHaveLength(45); // 40 records, 4 periodic checkpoints, 1 final
    // Flip a verdict in seq 3 and rebuild every hash after it, as someone with write access could.
    lines[2] = (lines[2] as string).replace('"verdict":"deny"', '"verdict":"allow"');
    writeLines(log, rechain(lines, 2));
    expect((await verifyAuditLog(log)).ok).toBe(true);
    const r = await verifyAuditLog(log, { key: hmacKey });
    expect(r.firstBad).toMatchObject({ line: 11, seq: 11 });
    expect(r.firstBad?.problem).toMatch(/signature is invalid/);
  });

  it('truncation after the last checkpoint is caught with the key: first unsigned record named', async () => {
    const keyFile = join(dir.path, 'audit.key');
    writeFileSync(keyFile, hmacKey.toString('base64') + '\n');
    const { loadCheckpointSigner } = await import('../../src/audit/index.js');
    const signer = await loadCheckpointSigner(keyFile);
    await writeLog({ path: log, checkpoint: { key: signer.key, every: 10 } }, 40);
    const full = readLines(log);
    expect((await verifyAuditLog(log, { key: signer.key })).ok).toBe(true);
    // Checkpoints sit at seq 11, 22, 33, 44 and 45 (final); keep seq 1..41, cutting 42..45.
    writeLines(log, full.slice(0, 41));
    const chainOnly = await verifyAuditLog(log);
    expect(chainOnly.ok).toBe(true); // the chain alone cannot see a cut end
    const r = await verifyAuditLog(log, { key: signer.key });
    expect(r.ok).toBe(false);
    expect(r.unsignedTail).toBe(8);
    expect(r.firstBad).toMatchObject({ line: 34, seq: 34, unsigned: true, problem: expect.stringMatching(/not covered by a signed checkpoint/) });
    const run = cli(['audit', 'verify', log, '--key', keyFile]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`${log}:34 (seq 34)`);
    // The chain itself held: the count is of the whole chain, not of records "before" seq 34.
    expect(run.stdout).toContain('the hash chain holds through seq 41 (41 record(s)), but the signed checkpoints do not vouch for it from seq 34 on');
    expect(cli(['audit', 'verify', log, '--key', keyFile, '--live']).code).toBe(0);
  });

  it('truncation back to a periodic checkpoint is caught: no final checkpoint', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    await writeLog({ path: log, checkpoint: { key: privateKey, every: 10 } }, 40);
    const lines = readLines(log);
    const cut = lines.slice(0, 33); // ends at the checkpoint sealing seq 32
    expect(parse(cut[32] as string)).toMatchObject({ event: 'audit.checkpoint', final: false });
    writeLines(log, cut);
    const r = await verifyAuditLog(log, { key: publicKey });
    expect(r.firstBad).toMatchObject({ line: 33, seq: 33, problem: expect.stringMatching(/final checkpoint/) });
    const pem = join(dir.path, 'audit.pub.pem');
    writeFileSync(pem, publicKey.export({ type: 'spki', format: 'pem' }));
    const run = cli(['audit', 'verify', log, '--key', pem]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain(`${log}:33`);
  });

  it('a wrong key fails at the first checkpoint and names both key ids', async () => {
    await writeLog({ path: log, checkpoint: { key: hmacKey, every: 10 } }, 20);
    const r = await verifyAuditLog(log, { key: randomBytes(32) });
    expect(r.firstBad).toMatchObject({ line: 11, problem: expect.stringMatching(/names key [0-9a-f]{16}, the verify key is [0-9a-f]{16}/) });
  });

  it('records appended after a clean close and without a key stay an unsigned tail', async () => {
    await writeLog({ path: log, checkpoint: { key: hmacKey, every: 10 } }, 5);
    await writeLog({ path: log }, 3);
    const r = await verifyAuditLog(log, { key: hmacKey, allowUnsignedTail: true });
    expect(r).toMatchObject({ ok: true, unsignedTail: 3, records: 9 });
  });
});
