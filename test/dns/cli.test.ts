// `microagent dns` as users run it: the built CLI in the foreground, dig against the port it prints,
// a policy edit picked up live, and a clean stop on SIGINT. Needs `npm run build` first.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dig } from './helpers/client.js';
import { GUARDED_POLICY, STRICT_POLICY } from './helpers/harness.js';
import { a, startTestUpstream, type TestUpstream } from './helpers/upstream.js';

const MAIN = join(import.meta.dirname, '../../dist/cli/main.js');
let dir: string;
let upstream: TestUpstream;
let child: ChildProcess | null = null;

beforeAll(async () => {
  upstream = await startTestUpstream();
  upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 0)]);
  upstream.set('free.unlisted.test', 'A', [a('free.unlisted.test', '192.0.2.12', 0)]);
  dir = await mkdtemp(join(tmpdir(), 'microagent-dns-cli-'));
  return async () => {
    await upstream.close();
    await rm(dir, { recursive: true, force: true });
  };
});
afterEach(() => {
  child?.kill('SIGKILL');
  child = null;
});

/** Starts the CLI and resolves with the port from its "listening on udp 127.0.0.1:PORT" line. */
function startCli(args: readonly string[]): Promise<{ port: number; output: () => string }> {
  const proc = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child = proc;
  let stdout = '';
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    proc.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const match = /listening on udp 127\.0\.0\.1:(\d+)/.exec(stdout);
      if (match !== null) resolve({ port: Number(match[1]), output: () => stdout });
    });
    proc.once('exit', (code) => reject(new Error(`microagent dns exited ${code}: ${stdout}${stderr}`)));
  });
}

describe('microagent dns', () => {
  it('serves in the foreground, reloads the policy on change and stops on SIGINT', async () => {
    const policyFile = join(dir, 'policy.yaml');
    const auditFile = join(dir, 'audit.jsonl');
    await writeFile(policyFile, GUARDED_POLICY);
    const { port, output } = await startCli([
      'dns', '--policy', policyFile, '--listen', '127.0.0.1:0', '--upstream', upstream.address, '--audit', auditFile, '--socket', join(dir, 'dns.sock'),
    ]);
    expect(output()).toContain(`unix ${join(dir, 'dns.sock')}`);
    expect((await dig(port, 'free.unlisted.test', 'A')).answers).toEqual(['A 192.0.2.12']);

    await writeFile(policyFile, STRICT_POLICY);
    let status = '';
    for (let i = 0; i < 50 && status !== 'REFUSED'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await dig(port, 'free.unlisted.test', 'A')).status;
    }
    expect(status).toBe('REFUSED');
    expect((await dig(port, 'web.test', 'A')).answers).toEqual(['A 192.0.2.10']);

    const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
    child?.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output()).toContain('dns: stopped (SIGINT)');
    const events = (await readFile(auditFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { event: string; reason?: string; mode?: string });
    expect(events.some((e) => e.event === 'policy.reload' && e.reason === 'reload_ok')).toBe(true);
    expect(events.filter((e) => e.event === 'dns.query').map((e) => e.mode)).toContain('strict');
  });

  it('overrides the policy mode with --mode', async () => {
    const policyFile = join(dir, 'mode.yaml');
    await writeFile(policyFile, GUARDED_POLICY);
    const { port } = await startCli([
      'dns', '--policy', policyFile, '--listen', '127.0.0.1:0', '--upstream', upstream.address, '--audit', join(dir, 'mode.jsonl'), '--mode', 'strict',
    ]);
    expect((await dig(port, 'free.unlisted.test', 'A')).status).toBe('REFUSED');
  });

  it('without --audit writes dns-audit.jsonl beside the workspaces, whatever --workspace says', async () => {
    const policyFile = join(dir, 'default-audit.yaml');
    await writeFile(policyFile, GUARDED_POLICY);
    const state = join(dir, 'state');
    const { port } = await startCli(['--state-dir', state, 'dns', '--policy', policyFile, '--listen', '127.0.0.1:0', '--upstream', upstream.address, '--workspace', '../../escape']);
    await dig(port, 'web.test', 'A');
    const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
    child?.kill('SIGINT');
    expect(await exited).toBe(0);
    const records = (await readFile(join(state, 'dns-audit.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { workspace: string });
    expect(records[0]?.workspace).toBe('../../escape');
    expect(existsSync(join(state, 'workspaces'))).toBe(false);
    expect(existsSync(join(dir, 'escape'))).toBe(false);
  });

  it('rejects a missing --policy as a usage error (exit 2)', async () => {
    const proc = spawn(process.execPath, [MAIN, 'dns', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => proc.once('exit', resolve));
    expect(code, stderr).toBe(2);
    expect(stderr).toContain('--policy FILE is required');
  });

  it.each([
    ['dns', '--listen', '127.0.0.1:0', '--upstream'],
    ['create', 'never-created', '--dns-upstream'],
  ])('%s refuses an upstream resolver given by name, before doing anything', async (...args) => {
    const policy = join(dir, 'upstream-name.yaml');
    await writeFile(policy, GUARDED_POLICY);
    const proc = spawn(process.execPath, [MAIN, '--state-dir', dir, ...args, 'resolver.example', '--policy', policy], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => proc.once('exit', resolve));
    expect(stderr).toBe('error: upstream resolver "resolver.example" is not an IP address with an optional port\n  fix: give upstreams as 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53\n');
    expect(code).toBe(1);
  });
});
