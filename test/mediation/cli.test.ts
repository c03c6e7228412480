/**
 * `microagent mediation serve|probe` as a user runs them: spawned from dist/ (run `npm run build`
 * first), checked by output, exit code and the audit log they leave.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readAuditRecords, verifyAuditLog } from '../../src/audit/index.js';
import { collect, eventually, guestConnect, startTarget, tempDir, type TestTarget } from './helpers.js';

const CLI = 'dist/cli/main.js';
let dir: { path: string; remove: () => Promise<void> };
let target: TestTarget;

beforeEach(async () => {
  dir = await tempDir('ma-med-cli-');
  target = await startTarget({ kind: 'unix', dir: dir.path, proxyProtocol: true, behaviour: 'reply-after-eof' });
});
afterEach(async () => {
  await target.close();
  await dir.remove();
});

function run(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
}

describe('mediation probe', () => {
  it('exits 0 and says ready for a live target', () => {
    const r = run('mediation', 'probe', target.address, '--proxy-protocol');
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^ready: .*target-.*\.sock \(observed \d{4}-/);
    expect(r.status).toBe(0);
  });

  it('exits 1 with the error and the remediation when nothing listens', () => {
    const r = run('mediation', 'probe', '127.0.0.1:1', '--timeout', '500');
    expect(r.stdout).toMatch(/not ready: 127\.0\.0\.1:1: connect ECONNREFUSED/);
    expect(r.stdout).toMatch(/fix: start the service on 127\.0\.0\.1:1/);
    expect(r.status).toBe(1);
  });

  it('answers one JSON document in AX mode', () => {
    const r = run('--mode=ax', 'mediation', 'probe', `${dir.path}/missing.sock`);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ ok: true, result: { ready: false, error: expect.stringMatching(/ENOENT/), remediation: expect.any(String) } });
    expect(r.status).toBe(1);
  });

  it.each([
    [['mediation', 'probe'], /exactly one TARGET/],
    [['mediation', 'probe', 'relative.sock'], /neither host:port nor an absolute Unix socket path/],
    [['mediation', 'probe', '127.0.0.1:1', '--timeout', 'soon'], /--timeout must be whole milliseconds/],
  ])('usage error for %j exits 2', (args, message) => {
    const r = run(...args);
    expect(r.stderr).toMatch(message);
    expect(r.status).toBe(2);
  });
});

describe('mediation serve', () => {
  it('prints its sockets, relays with a PROXY header, audits, and stops on SIGINT', async () => {
    const audit = `${dir.path}/audit.jsonl`;
    const child = spawn(process.execPath, [
      CLI, 'mediation', 'serve', '--port', `5000=${target.address}`, '--port', '5001=127.0.0.1:1',
      '--socket-dir', `${dir.path}/sockets`, '--audit', audit, '--workspace', 'cli-ws',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const lines = createInterface({ input: child.stdout });
    const stdout: string[] = [];
    let listening = 0;
    for await (const line of lines) {
      stdout.push(line);
      if (line.startsWith('listening ') && ++listening === 2) break;
    }
    expect(stdout).toEqual([
      `listening ${dir.path}/sockets/5000.sock -> ${target.address} (PROXY v2)`,
      `listening ${dir.path}/sockets/5001.sock -> 127.0.0.1:1 (PROXY v2)`,
    ]);

    const guest = await guestConnect(`${dir.path}/sockets/5000.sock`);
    const outcome = collect(guest);
    guest.end('through the cli');
    expect((await outcome).data.toString()).toBe('THROUGH THE CLI');
    const refused = await collect(await guestConnect(`${dir.path}/sockets/5001.sock`));
    expect(refused.data.length).toBe(0);
    // One relayed connection (PROXY) and serve's readiness probe at start (LOCAL, a health check).
    await eventually(() => target.headers.length === 2, 'probe and relay headers');
    expect(target.headers.map((h) => (h.kind === 'header' ? h.header.command : h.kind)).sort()).toEqual(['local', 'proxy']);

    const rest: string[] = [];
    lines.on('line', (l) => rest.push(l));
    child.kill('SIGINT');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(rest.join('\n')).toMatch(/stopped \(SIGINT\)\nPORT +TARGET .*\n5000 +\S+ +1 +0 +15 +15\n5001 +127\.0\.0\.1:1 +1 +1 +0 +0/);
    expect(stderr).toMatch(/warning: channel 5001 -> 127\.0\.0\.1:1 is not ready/);

    const records = [];
    for await (const r of readAuditRecords(audit)) records.push(r);
    expect(records.map((r) => [r.event, 'verdict' in r ? r.verdict : r.event === 'mediation.close' ? r.closed_by : '', r.workspace])).toEqual([
      ['mediation.connect', 'allow', 'cli-ws'],
      ['mediation.close', 'guest', 'cli-ws'],
      ['mediation.connect', 'allow', 'cli-ws'],
      ['mediation.connect', 'deny', 'cli-ws'],
    ]);
    expect((await verifyAuditLog(audit)).ok).toBe(true);
  });

  it('refuses a bad declaration with its message and remediation (exit 1)', () => {
    const r = run('mediation', 'serve', '--port', '0=127.0.0.1:1', '--port', '7=here', '--socket-dir', `${dir.path}/s`);
    expect(r.stderr).toMatch(/mediation channel #1: field port: must be an integer from 1 to 4294967295/);
    expect(r.stderr).toMatch(/mediation channel 7: field target: "here" is neither host:port/);
    expect(r.stderr).toMatch(/fix: declare each channel/);
    expect(r.status).toBe(1);
  });

  it('needs --port and --socket-dir (exit 2)', () => {
    const r = run('mediation', 'serve', '--socket-dir', dir.path);
    expect(r.stderr).toMatch(/needs at least one --port N=TARGET and a --socket-dir/);
    expect(r.status).toBe(2);
  });
});
