// `microagent proxy` as a user runs it: spawned from dist/ (run `npm run build` first), it prints
// where it listens and where the CA is, serves, reloads the policy on change, and stops on SIGINT
// with its audit records flushed; run as an executable, it trusts the host's NODE_EXTRA_CA_CERTS,
// which its shebang hands over unparsed (src/tls-trust.ts).
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readAuditRecords, verifyAuditLog } from '../../src/audit/index.js';
import { curl, makeOriginCa, startHttpOrigin, startHttpsOrigin } from './helpers.js';

const ALLOW = (rule: 'allow' | 'deny') => `version: 1\nmode: guarded\nrules:\n  - id: loopback\n    action: ${rule}\n    cidrs: [127.0.0.1/32]\n    tls: true\n`;

interface RunningProxy {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly policyFile: string;
  readonly url: string;
  readonly caPath: string;
  readonly stderr: string[];
  waitFor(pattern: RegExp): Promise<RegExpMatchArray>;
}

/** Starts `microagent proxy` on a free loopback port, as `command` (node and the script, or the script itself). */
async function startProxyCli(command: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunningProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-cli-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, ALLOW('allow'));
  const [file, ...args] = command as [string, ...string[]];
  const child = spawn(file, [...args, '--state-dir', dir, 'proxy', '--policy', policyFile, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(out);
        if (m !== null) {
          child.stdout?.off('data', onData);
          resolve(m);
        }
      };
      const onData = (c: Buffer) => {
        out += c.toString();
        check();
      };
      child.stdout?.on('data', onData);
      child.once('exit', () => reject(new Error(`proxy exited early:\n${out}`)));
      check();
    });
  const stderr: string[] = [];
  child.stderr?.on('data', (c: Buffer) => stderr.push(c.toString()));
  const listening = await waitFor(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
  const caLine = await waitFor(/CA certificate (\S+)/);
  return { child, dir, policyFile, url: `http://127.0.0.1:${listening[1]}`, caPath: caLine[1] as string, stderr, waitFor };
}

async function interrupt(proxy: RunningProxy): Promise<number | null> {
  proxy.child.kill('SIGINT');
  return new Promise((resolve) => proxy.child.once('exit', resolve));
}

describe('microagent proxy', () => {
  it('serves, hot-reloads the policy, and shuts down cleanly on SIGINT', async () => {
    const { port: originPort, server } = await startHttpOrigin();
    const proxy = await startProxyCli([process.execPath, 'dist/cli/main.js']);
    expect(proxy.caPath).toBe(join(proxy.dir, 'proxy-ca', 'ca.pem'));
    expect(existsSync(proxy.caPath)).toBe(true);

    const allowed = await curl(['-x', proxy.url, `http://127.0.0.1:${originPort}/echo`]);
    expect(allowed.status).toBe(200);

    writeFileSync(proxy.policyFile, ALLOW('deny'));
    await proxy.waitFor(/policy reloaded/);
    const denied = await curl(['-x', proxy.url, `http://127.0.0.1:${originPort}/echo`]);
    expect(denied.status).toBe(403);
    expect(denied.body).toBe(`microagent: denied by rule "loopback" (rule_deny) for 127.0.0.1:${originPort}: a deny rule matched\n`);

    expect(await interrupt(proxy), proxy.stderr.join('')).toBe(0);
    server.close();

    const auditPath = join(proxy.dir, 'proxy-audit.jsonl');
    const events: string[] = [];
    for await (const r of readAuditRecords(auditPath)) events.push(`${r.event}${'reason' in r && r.reason ? `:${r.reason}` : ''}`);
    expect(events).toContain('policy.reload:reload_ok');
    expect(events).toContain('egress.decision:rule_allow');
    expect(events).toContain('egress.decision:rule_deny');
    expect(events.filter((e) => e.startsWith('egress.close')).length).toBeGreaterThan(0);
    expect((await verifyAuditLog(auditPath)).ok).toBe(true);
  });

  it('trusts the CAs NODE_EXTRA_CA_CERTS names upstream, though its shebang keeps Node from loading them at start-up', async () => {
    const originCa = makeOriginCa();
    const { server, port } = await startHttpsOrigin(originCa);
    const cases = [
      { env: { NODE_EXTRA_CA_CERTS: originCa.caPath }, status: 200 },
      { env: { NODE_EXTRA_CA_CERTS: join(originCa.dir, 'missing.pem') }, status: 502 },
      { env: {}, status: 502 },
    ];
    try {
      for (const { env, status } of cases) {
        const base = { ...process.env };
        delete base['NODE_EXTRA_CA_CERTS'];
        const proxy = await startProxyCli(['dist/cli/main.js'], { ...base, ...env });
        try {
          const environ = readFileSync(`/proc/${proxy.child.pid}/environ`, 'utf8').split('\0');
          expect(environ.some((v) => v.startsWith('NODE_EXTRA_CA_CERTS='))).toBe(false);
          expect(environ).toContain(`MICROAGENT_EXTRA_CA_CERTS=${env.NODE_EXTRA_CA_CERTS ?? ''}`);
          const reply = await curl(['-x', proxy.url, '--cacert', proxy.caPath, `https://127.0.0.1:${port}/echo`]);
          expect(reply.status, JSON.stringify(env)).toBe(status);
          if (status !== 200) expect(reply.headers).toMatch(/x-microagent-reason: upstream_cert_invalid/i);
        } finally {
          await interrupt(proxy);
        }
      }
    } finally {
      server.close();
    }
  });

  it('prints the environment a client needs, and a client given only that reaches an HTTPS origin through it', async () => {
    const originCa = makeOriginCa();
    const { server, port } = await startHttpsOrigin(originCa);
    const base = { ...process.env, NODE_EXTRA_CA_CERTS: originCa.caPath };
    const proxy = await startProxyCli(['dist/cli/main.js'], base);
    try {
      const line = (await proxy.waitFor(/proxy: for clients: (.*)\n/))[1] as string;
      const clientEnv = Object.fromEntries(line.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      expect(clientEnv).toEqual({
        HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url, SSL_CERT_FILE: proxy.caPath, CURL_CA_BUNDLE: proxy.caPath, NODE_EXTRA_CA_CERTS: proxy.caPath, NODE_USE_ENV_PROXY: '1', REQUESTS_CA_BUNDLE: proxy.caPath,
      });
      const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'], ...clientEnv };
      const { stdout } = await promisify(execFile)('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `https://127.0.0.1:${port}/echo`], { env });
      expect(stdout).toBe('200');
    } finally {
      await interrupt(proxy);
      server.close();
    }
  });

  it.each([
    ['a file that does not exist', (dir: string) => join(dir, 'absent.pem'), (f: string) => `error: cannot read the upstream CA file ${f}: ENOENT\n  fix: pass a readable PEM file with --upstream-ca FILE\n`],
    ['a file without a certificate', (dir: string) => join(dir, 'policy.yaml'), (f: string) => `error: ${f} holds no PEM certificate\n  fix: pass a PEM file (-----BEGIN CERTIFICATE-----) with --upstream-ca FILE\n`],
  ])('--upstream-ca naming %s is refused before it listens', (_what, file, message) => {
    const dir = mkdtempSync(join(tmpdir(), 'proxy-cli-'));
    writeFileSync(join(dir, 'policy.yaml'), ALLOW('allow'));
    const ca = file(dir);
    const r = spawnSync(process.execPath, ['dist/cli/main.js', '--state-dir', dir, 'proxy', '--policy', join(dir, 'policy.yaml'), '--listen', '127.0.0.1:0', '--upstream-ca', ca], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    expect(r.stderr).toBe(message(ca));
    expect(r.status).toBe(1);
  });

  it.each(['proxy', 'dns'])('%s --policy naming a file that does not exist says so, not "a bug"', (command) => {
    const dir = mkdtempSync(join(tmpdir(), 'proxy-cli-'));
    const policy = join(dir, 'absent.yaml');
    const r = spawnSync(process.execPath, ['dist/cli/main.js', '--state-dir', dir, command, '--policy', policy, '--listen', '127.0.0.1:0'], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    expect(r.stderr).toBe(`error: cannot read policy ${policy}: ENOENT: no such file or directory, open '${policy}'\n  fix: check the path, or start from policies/guarded.yaml\n`);
    expect(r.status).toBe(1);
  });
});

