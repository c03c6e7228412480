/** query, summary and tail over a real log, through the API and the CLI (table, CSV, --json, tail -f). */
import { mkdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseTimeBound } from '../../src/audit/query.js';
import {
  openAuditLog,
  queryAuditLog,
  summarizeAuditLog,
  tailAuditLog,
  verifyAuditLog,
  type AuditRecord,
  type LocatedRecord,
} from '../../src/audit/index.js';
import { cli, cliProcess, decision, tempDir, until, writeLog } from './helpers.js';

let dir: ReturnType<typeof tempDir>;
let log: string;
beforeEach(async () => {
  dir = tempDir();
  log = join(dir.path, 'audit.jsonl');
});
afterEach(() => dir.cleanup());

const conns = (rs: readonly AuditRecord[]) => rs.map((r) => (r as { conn?: string }).conn);

describe('query', () => {
  beforeEach(async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', rotateBytes: 4096 });
    for (let i = 0; i < 50; i++) await audit.append(decision(i));
    await audit.append({ event: 'dns.query', name: 'evil.example', qtype: 'A', transport: 'udp', answers: 0, upstream_ms: null, cached: false, rcode: 'REFUSED', verdict: 'deny', rule: 'block-evil', reason: 'rule_deny', signals: [], mode: 'guarded', policy_hash: 'sha256:x' });
    await audit.append({ event: 'lifecycle.stop', state: 'stopped' });
    await audit.append(decision(50, { host: '::1', port: 2222, protocol: 'tcp', conn: 'v6' }));
    await audit.close();
  });

  it('filters by verdict, host glob, rule, event glob and time, across segments', async () => {
    const denied = await queryAuditLog(log, { verdict: 'deny' });
    expect(denied).toHaveLength(21); // 10 evil.example, 10 metadata IP, 1 DNS
    expect(await queryAuditLog(log, { host: '*.EXAMPLE' })).toHaveLength(11);
    expect(conns(await queryAuditLog(log, { host: '169.254.*', event: 'egress.*' }))).toEqual(
      Array.from({ length: 10 }, (_, k) => `c${k * 5 + 3}`),
    );
    expect(await queryAuditLog(log, { rule: 'block-evil', event: 'dns.query' })).toMatchObject([{ name: 'evil.example' }]);
    expect(await queryAuditLog(log, { event: 'lifecycle.*' })).toMatchObject([{ state: 'stopped' }]);
    expect(conns(await queryAuditLog(log, { signal: 'internal_address' }))).toEqual(Array.from({ length: 10 }, (_, k) => `c${k * 5 + 3}`));
    expect(await queryAuditLog(log, { signal: 'rebinding' })).toHaveLength(0);
    expect(await queryAuditLog(log, { since: '1h' })).toHaveLength(53);
    expect(await queryAuditLog(log, { until: '2000-01-01' })).toHaveLength(0);
    expect(await queryAuditLog(log, { since: new Date(Date.now() + 60_000) })).toHaveLength(0);
    await expect(queryAuditLog(log, { since: 'yesterday' })).rejects.toMatchObject({ code: 'audit.bad_query' });
  });

  it('a date is a whole UTC day; a time needs its offset; a day that does not exist is refused', async () => {
    const today = new Date().toISOString().slice(0, 10);
    expect(await queryAuditLog(log, { since: today, until: today })).toHaveLength(53);
    expect(parseTimeBound('2026-01-31', 'since')).toBe(Date.parse('2026-01-31T00:00:00.000Z'));
    expect(parseTimeBound('2026-01-31', 'until')).toBe(Date.parse('2026-01-31T23:59:59.999Z'));
    expect(parseTimeBound('2026-01-31T12:00:00+01:00', 'until')).toBe(Date.parse('2026-01-31T11:00:00Z'));
    expect(() => parseTimeBound('2026-01-31T12:00:00', 'since')).toThrow(/has no time zone offset/);
    for (const bad of ['2026-02-30', '2026-11-31T00:00:00Z', '2026-13-45', '2026-01-31T25:00:00Z', '31/01/2026']) {
      expect(() => parseTimeBound(bad, 'since'), bad).toThrow(/is not a time/);
    }
    const run = cli(['audit', 'query', log, '--until', '2026-02-30']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--until: "2026-02-30" is not a time');
  });

  it('the CLI prints a table, CSV, or a JSON array', () => {
    const human = cli(['audit', 'query', log, '--verdict', 'deny', '--host', 'evil.*']);
    expect(human.code).toBe(0);
    expect(human.stdout.split('\n')[0]).toMatch(/^seq\s+ts\s+event\s+verdict\s+destination\s+rule\s+reason$/);
    expect(human.stdout).toContain('evil.example:443');
    expect(human.stdout).toContain('11 record(s)');
    const csv = cli(['audit', 'query', log, '--rule', 'block-evil', '--csv']);
    const rows = csv.stdout.trim().split('\n');
    expect(rows[0]).toBe('seq,ts,event,verdict,destination,rule,reason');
    expect(rows).toHaveLength(12);
    expect(rows[1]).toMatch(/^3,\S+Z,egress\.decision,deny,evil\.example:443,block-evil,rule_deny$/);
    const json = cli(['audit', 'query', log, '--event', 'dns.*', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject([{ event: 'dns.query', name: 'evil.example', verdict: 'deny' }]);
    const bad = cli(['audit', 'query', log, '--verdict', 'maybe']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--verdict must be one of');
    expect(cli(['audit', 'query', log, '--signal', 'internal_address']).stdout).toContain('10 record(s)');
    // An IPv6 literal's port is told apart from its address, as in a URL.
    expect(cli(['audit', 'query', log, '--host', '::1', '--csv']).stdout).toMatch(/,\[::1\]:2222,allow-dev,/);
    const unknown = cli(['audit', 'query', log, '--signal', 'rebind']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('"rebind" is not a signal');
    expect(unknown.stderr).toContain('rebinding, answer_stripped');
  });
});

describe('names a guest chose, printed for people', () => {
  // What a guest can get recorded: the resolver records a refused name as asked, control bytes and all.
  const HOSTILE = 'x\u001b]0;PWNED\u0007\u001b[31mred\r\nseq 99 forged\u202e.test';

  it('are escaped in the table, CSV, tail and summary; --json keeps them exact', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    await audit.append({ event: 'dns.query', name: HOSTILE, qtype: 'A', transport: 'udp', answers: 0, upstream_ms: null, cached: false, rcode: 'REFUSED', verdict: 'deny', rule: null, reason: 'invalid_target', signals: [], mode: 'guarded', policy_hash: 'sha256:x' });
    await audit.close();
    const outputs = [
      cli(['audit', 'query', log]).stdout,
      cli(['audit', 'query', log, '--csv']).stdout,
      cli(['audit', 'tail', log]).stdout,
      cli(['audit', 'summary', log]).stdout,
    ];
    for (const out of outputs) {
      expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f\u202e]/);
      expect(out).toContain('x\\x1b]0;PWNED\\x07\\x1b[31mred\\x0d\\x0aseq 99 forged\\u202e.test');
    }
    expect(outputs[0]?.trimEnd().split('\n')).toHaveLength(3); // header, the one record, the count
    expect(JSON.parse(cli(['audit', 'query', log, '--json']).stdout)).toMatchObject([{ name: HOSTILE }]);
  });
});

describe('summary', () => {
  it('counts verdicts and events, ranks denied hosts and finds rules that never fired', async () => {
    await writeLog({ path: log }, 50);
    const policy = join(dir.path, 'policy.yaml');
    writeFileSync(
      policy,
      [
        'version: 1',
        'mode: guarded',
        'rules:',
        '  - id: allow-dev',
        '    action: allow',
        '    hosts: [api.github.com, pypi.org, registry.npmjs.org]',
        '  - id: block-evil',
        '    action: deny',
        '    hosts: [evil.example]',
        '  - id: unused-rule',
        '    action: allow',
        '    hosts: [never.example.org]',
        '',
      ].join('\n'),
    );
    const s = await summarizeAuditLog(log, { policyRuleIds: ['allow-dev', 'block-evil', 'unused-rule'] });
    expect(s).toMatchObject({
      records: 50,
      byVerdict: { allow: 30, deny: 20 },
      byEvent: { 'egress.decision': 50 },
      bySignal: { internal_address: 10 },
      ruleHits: [{ rule: 'allow-dev', count: 30 }, { rule: 'block-evil', count: 10 }],
      neverFired: ['unused-rule'],
    });
    expect(s.topDeniedHosts).toEqual([{ host: '169.254.169.254', count: 10 }, { host: 'evil.example', count: 10 }]);
    const run = cli(['audit', 'summary', log, '--policy', policy]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/rules that never fired:\n {2}unused-rule/);
    expect(run.stdout).toContain('evil.example: 10');
    expect(run.stdout).toMatch(/by signal:\n {2}internal_address: 10\n/);
    expect(JSON.parse(cli(['audit', 'summary', log, '--json']).stdout)).toMatchObject({ records: 50, byVerdict: { deny: 20 } });
  });
});

describe('tail', () => {
  it('shows the last N records', async () => {
    await writeLog({ path: log, rotateBytes: 2048 }, 30);
    const got: LocatedRecord[] = [];
    for await (const r of tailAuditLog(log, { lines: 5 })) got.push(r);
    expect(got.map((r) => r.record.seq)).toEqual([26, 27, 28, 29, 30]);
    const run = cli(['audit', 'tail', log, '-n', '3', '--json']);
    expect((JSON.parse(run.stdout) as AuditRecord[]).map((r) => r.seq)).toEqual([28, 29, 30]);
    expect(cli(['audit', 'tail', log, '-n', '2']).stdout).toMatch(/^29 .*\n30 .*egress\.decision/);
  });

  it('follows new records across rotations until aborted', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', rotateBytes: 2048 });
    for (let i = 0; i < 3; i++) await audit.append(decision(i));
    const stop = new AbortController();
    const seen: number[] = [];
    const following = (async () => {
      for await (const r of tailAuditLog(log, { lines: 2, follow: true, signal: stop.signal, pollMs: 20 })) seen.push(r.record.seq);
    })();
    await until(() => seen.length === 2, 'history');
    for (let i = 3; i < 60; i++) await audit.append(decision(i)); // ~12 rotations
    await until(() => seen.length === 59, 'followed records');
    stop.abort();
    await following;
    await audit.close();
    expect(seen).toEqual(Array.from({ length: 59 }, (_, k) => k + 2));
  });

  it('a log cut short in place, or replaced by a new chain, is followed again from its start', async () => {
    let audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    for (let i = 0; i < 5; i++) await audit.append(decision(i));
    await audit.close();
    const stop = new AbortController();
    const seen: number[] = [];
    const restarts: string[] = [];
    const following = (async () => {
      for await (const r of tailAuditLog(log, { lines: 5, follow: true, signal: stop.signal, pollMs: 20, onRestart: (why) => restarts.push(why) })) seen.push(r.record.seq);
    })();
    await until(() => seen.length === 5, 'history');
    // Cut in place (same file), then a new chain written into it.
    truncateSync(log, 0);
    audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    for (let i = 0; i < 3; i++) await audit.append(decision(i));
    await audit.close();
    await until(() => seen.length === 8, 'the records after the cut');
    // Replaced: the file removed and a new one written at the path, no rotation.
    rmSync(log);
    audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    for (let i = 0; i < 2; i++) await audit.append(decision(i));
    await until(() => seen.length === 10, 'the records of the new file');
    stop.abort();
    await following;
    await audit.close();
    expect(seen).toEqual([1, 2, 3, 4, 5, 1, 2, 3, 1, 2]);
    expect(restarts).toEqual(['truncated', 'replaced']);
  });

  it('the CLI tail -f streams records as they are written and stops on SIGINT', async () => {
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit', rotateBytes: 4096 });
    await audit.append(decision(0));
    const child = cliProcess(['audit', 'tail', log, '-f', '--json']);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await until(() => out.includes('"seq":1,'), 'the history line');
    for (let i = 1; i < 40; i++) await audit.append(decision(i));
    await until(() => out.includes('"seq":40,'), 'the followed lines');
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    await audit.close();
    const seqs = out.split('\n').filter((l) => l.startsWith('{"v"')).map((l) => (JSON.parse(l) as AuditRecord).seq);
    expect(seqs).toEqual(Array.from({ length: 40 }, (_, k) => k + 1));
  });
});

describe('a log that is not there', () => {
  const paths = {
    'a file that does not exist': () => join(dir.path, 'absent.jsonl'),
    'a directory that does not exist': () => join(dir.path, 'absent-dir', 'audit.jsonl'),
    'a path through a file': () => {
      writeFileSync(join(dir.path, 'plain'), 'x');
      return join(dir.path, 'plain', 'audit.jsonl');
    },
  };
  it.each(Object.keys(paths))('%s: verify, query, summary and tail name it and exit 1', (kind) => {
    const path = paths[kind as keyof typeof paths]();
    for (const verb of ['verify', 'query', 'summary', 'tail']) {
      const run = cli(['audit', verb, path]);
      expect(run.stderr, verb).toBe(`error: no audit log at ${path}\n  fix: Pass the path of the active log file (e.g. ~/.microagent/workspaces/NAME/audit.jsonl); sealed segments next to it are read too.\n`);
      expect(run.code, verb).toBe(1);
    }
  });

  it('a directory at the path is named as one, for every reader', () => {
    const path = join(dir.path, 'logs.jsonl');
    mkdirSync(path);
    for (const verb of ['verify', 'query', 'summary', 'tail']) {
      const run = cli(['audit', verb, path]);
      expect(run.stderr, verb).toContain(`error: ${path} is a directory, not an audit log`);
      expect(run.code, verb).toBe(1);
    }
  });

  it('files beside the log that the writer never names (audit.jsonl.1, a seven-digit 0000001) are not segments', async () => {
    await writeLog({ path: log }, 3);
    writeFileSync(`${log}.1`, 'a logrotate backup\n');
    writeFileSync(`${log}.0000001`, 'not the writer\'s name\n');
    expect(await verifyAuditLog(log)).toMatchObject({ ok: true, records: 3, files: [log] });
  });

  it('tail -f in an existing directory waits for the log to be created', async () => {
    const stop = new AbortController();
    const seen: number[] = [];
    const following = (async () => {
      for await (const r of tailAuditLog(log, { follow: true, signal: stop.signal, pollMs: 20 })) seen.push(r.record.seq);
    })();
    const audit = await openAuditLog({ path: log, workspace: 'ws-audit' });
    for (let i = 0; i < 3; i++) await audit.append(decision(i));
    await until(() => seen.length === 3, 'the records of the new log');
    stop.abort();
    await following;
    await audit.close();
    expect(seen).toEqual([1, 2, 3]);
    await expect(tailAuditLog(join(dir.path, 'absent-dir', 'audit.jsonl'), { follow: true }).next()).rejects.toMatchObject({ kind: 'not_found', code: 'audit.not_found' });
  });
});
