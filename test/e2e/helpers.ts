/**
 * Fixtures for the end-to-end tests: the shared state directory (kernel and default image prepared once
 * by global-setup.ts), a CLI runner, and the host side of a guest's world: a local HTTPS origin with its
 * own CA, a dnsmasq upstream answering test names with 127.0.0.1, a mediation target that keeps the
 * PROXY v2 header it receives, and policy files. Everything listens on 127.0.0.1 only.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseProxyV2, readMediationTlvs, type MediationTlvs, type ProxyV2Header } from '../../src/mediation/index.js';

export const E2E_STATE_DIR = '/tmp/microagent-e2e-state';
export const CLI = resolve(import.meta.dirname, '../../dist/cli/main.js');
/** Per-test budget for anything that boots a VM under TCG on a busy 2-core host. */
export const VM_TIMEOUT = 300_000;

export function tempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `ma-e2e-${label}-`));
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `microagent --state-dir DIR ARGS...`; never throws on a non-zero exit. */
export function cli(args: readonly string[], opts: { stateDir?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, '--state-dir', opts.stateDir ?? E2E_STATE_DIR, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? VM_TIMEOUT - 10_000);
  return new Promise((resolvePromise) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** `cli` with `--json`, parsing stdout. */
export async function cliJson<T = Record<string, unknown>>(args: readonly string[], opts: Parameters<typeof cli>[1] = {}): Promise<CliResult & { json: T }> {
  const r = await cli(['--json', ...args], opts);
  let json: T;
  try {
    json = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`microagent ${args.join(' ')} exited ${r.code} without JSON on stdout:\n${r.stdout}\n${r.stderr}`);
  }
  return { ...r, json };
}

/** A CLI failure must be a message, never a stack trace. */
export function expectNoStackTrace(r: CliResult): void {
  if (/\n\s+at .+:\d+:\d+\)?/.test(r.stderr) || /\n\s+at .+:\d+:\d+\)?/.test(r.stdout)) {
    throw new Error(`stack trace in CLI output:\n${r.stderr}`);
  }
}

export interface TestCa {
  readonly caPem: string;
  readonly caFile: string;
  readonly keyFile: string;
  readonly certFile: string;
}

/** A throwaway CA and one leaf for `names` (openssl CLI, EC P-256). */
export function makeOriginCa(dir: string, names: readonly string[]): TestCa {
  const f = (n: string) => join(dir, n);
  const ossl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=microagent e2e origin CA', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${names[0]}`, '-keyout', f('leaf.key'), '-out', f('leaf.csr')]);
  writeFileSync(f('leaf.ext'), `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
  ossl(['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('leaf.ext'), '-out', f('leaf.pem')]);
  return { caPem: readFileSync(f('ca.pem'), 'utf8'), caFile: f('ca.pem'), keyFile: f('leaf.key'), certFile: f('leaf.pem') };
}

export interface Origin {
  readonly port: number;
  /** `host path` of every request the origin served. */
  readonly requests: string[];
  close(): Promise<void>;
}

/** HTTPS origin on 127.0.0.1 answering `hello from HOST PATH`. */
export async function startOrigin(ca: TestCa): Promise<Origin> {
  const requests: string[] = [];
  const server: HttpsServer = createHttpsServer({ key: readFileSync(ca.keyFile), cert: readFileSync(ca.certFile) }, (req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    requests.push(`${host} ${req.url ?? ''}`);
    res.end(`hello from ${host} ${req.url ?? ''}\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function freeUdpPort(): Promise<number> {
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const { port } = sock.address();
  await new Promise<void>((r) => sock.close(r));
  return port;
}

export interface DnsUpstream {
  readonly address: string;
  close(): Promise<void>;
}

/** dnsmasq on 127.0.0.1 answering each of `names` (and its subdomains) with 127.0.0.1, nothing else. */
export async function startDnsUpstream(names: readonly string[]): Promise<DnsUpstream> {
  for (let attempt = 0; ; attempt++) {
    const port = await freeUdpPort();
    const child: ChildProcess = spawn(
      'dnsmasq',
      ['--no-daemon', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', '--user=root', '--pid-file=', ...names.map((n) => `--address=/${n}/127.0.0.1`)],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await sleep(300);
    if (child.exitCode === null) {
      return {
        address: `127.0.0.1:${port}`,
        close: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          await new Promise((r) => child.once('exit', r));
        },
      };
    }
    if (attempt > 3) throw new Error(`dnsmasq did not start: ${stderr}`);
  }
}

export interface MediationTarget {
  readonly address: string;
  /** The PROXY v2 header (and the broker's TLVs in it) of every connection that sent a line; readiness probes send none. */
  readonly headers: { readonly command: ProxyV2Header['command']; readonly tlvs: MediationTlvs | null }[];
  close(): Promise<void>;
}

/** TCP listener on 127.0.0.1 that parses the broker's PROXY v2 header and answers `pong:<payload>`. */
export async function startMediationTarget(): Promise<MediationTarget> {
  const headers: MediationTarget['headers'] = [];
  const server: TcpServer = createTcpServer((socket) => {
    let buf = Buffer.alloc(0);
    let header: MediationTarget['headers'][number] | null = null;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (header === null) {
        const parsed = parseProxyV2(buf);
        if (parsed.kind === 'need_more') return;
        if (parsed.kind === 'error') {
          socket.end(`bad header: ${parsed.message}\n`);
          return;
        }
        header = { command: parsed.header.command, tlvs: readMediationTlvs(parsed.tlvs) };
        buf = buf.subarray(parsed.length);
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      headers.push(header);
      socket.end(`pong:${buf.subarray(0, nl).toString()}\n`);
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    headers,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** A guarded policy allowing exactly `allow` (exact hosts, so their internal address is allowed) and denying `deny`. */
export function writePolicy(dir: string, allow: readonly string[], deny: readonly string[]): string {
  const file = join(dir, 'policy.yaml');
  const list = (xs: readonly string[]) => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`;
  writeFileSync(
    file,
    [
      'version: 1',
      'mode: guarded',
      'rules:',
      '  - id: e2e-origin',
      '    action: allow',
      `    hosts: ${list(allow)}`,
      '  - id: e2e-denied',
      '    action: deny',
      `    hosts: ${list(deny)}`,
      '',
    ].join('\n'),
  );
  return file;
}
