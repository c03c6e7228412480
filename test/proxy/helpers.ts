// Shared fixtures for the proxy's integration tests: a test origin CA and HTTPS/HTTP origins on
// loopback, a programmable HostResolver, and a proxy started with the REAL policy engine, audit log
// and CA in a temp dir.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import 'reflect-metadata';
import { openAuditLog, readAuditRecords, type AuditRecord, type AuditSink, type AuditEvent } from '../../src/audit/index.js';
import { loadOrCreateCa, type CaStats } from '../../src/ca/index.js';
import { parsePolicy, type Policy } from '../../src/policy/index.js';
import { startEgressProxy, type EgressProxy, type EgressProxyOptions } from '../../src/proxy/index.js';
import type { HostResolver } from '../../src/proxy/resolver.js';

export interface OriginCa {
  readonly dir: string;
  readonly caPem: string;
  readonly caPath: string;
  readonly key: string;
  readonly cert: string;
  /** A certificate for the same names from a CA nobody trusts. */
  readonly untrustedKey: string;
  readonly untrustedCert: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

/** An origin CA and a leaf for origin.test, *.origin.test and 127.0.0.1, made with openssl. */
export function makeOriginCa(): OriginCa {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-origin-ca-'));
  const leaf = (prefix: string, caPrefix: string) => {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${caPrefix}.key`, '-out', `${caPrefix}.pem`, '-days', '2', '-subj', `/CN=${caPrefix} test CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${prefix}.key`, '-out', `${prefix}.csr`, '-subj', '/CN=origin.test'], dir);
    writeFileSync(join(dir, `${prefix}.ext`), 'subjectAltName=DNS:origin.test,DNS:*.origin.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    openssl(['x509', '-req', '-in', `${prefix}.csr`, '-CA', `${caPrefix}.pem`, '-CAkey', `${caPrefix}.key`, '-CAcreateserial', '-out', `${prefix}.pem`, '-days', '2', '-extfile', `${prefix}.ext`], dir);
  };
  leaf('leaf', 'ca');
  leaf('rogue-leaf', 'rogue-ca');
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { dir, caPem: read('ca.pem'), caPath: join(dir, 'ca.pem'), key: read('leaf.key'), cert: read('leaf.pem'), untrustedKey: read('rogue-leaf.key'), untrustedCert: read('rogue-leaf.pem') };
}

type AnyReq = IncomingMessage | Http2ServerRequest;
type AnyRes = ServerResponse | Http2ServerResponse;

/**
 * Test origin routes: /echo (JSON of what arrived), /bytes/N (N bytes), /upload (counts the body),
 * /echo-header/NAME (returns that request header's value), /grpc (trailers), anything else 200 "ok".
 */
export function originHandler(label: string) {
  return (req: AnyReq, res: AnyRes) => {
    const url = req.url ?? '/';
    if (url.startsWith('/bytes/')) {
      let left = Number(url.slice('/bytes/'.length));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!(res as ServerResponse).write(chunk.subarray(0, n))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    let received = 0;
    req.on('data', (c: Buffer) => {
      received += c.length;
    });
    req.on('end', () => {
      if (url === '/upload') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(String(received));
      } else if (url.startsWith('/header-present/')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(req.headers[url.slice('/header-present/'.length).toLowerCase()] === undefined ? 'absent' : 'present');
      } else if (url.startsWith('/echo-header/')) {
        const value = String(req.headers[url.slice('/echo-header/'.length).toLowerCase()] ?? '');
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(value)) });
        res.end(value);
      } else if (url === '/grpc') {
        res.writeHead(200, { 'content-type': 'application/grpc' });
        res.addTrailers({ 'grpc-status': '0', 'grpc-message': 'fine' });
        res.end(Buffer.from([0, 0, 0, 0, 2, 8, 1]));
      } else {
        const body = JSON.stringify({ label, method: req.method, url, httpVersion: req.httpVersion, headers: req.headers, received });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      }
    });
  };
}

export async function listen(server: Server | Http2SecureServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

export async function startHttpsOrigin(ca: OriginCa, options: { untrusted?: boolean; label?: string } = {}): Promise<{ server: Http2SecureServer; port: number }> {
  const server = createSecureServer(
    {
      allowHTTP1: true,
      key: options.untrusted ? ca.untrustedKey : ca.key,
      cert: options.untrusted ? ca.untrustedCert : ca.cert,
    },
    originHandler(options.label ?? 'https-origin'),
  );
  return { server, port: await listen(server) };
}

export async function startHttpOrigin(label = 'http-origin'): Promise<{ server: Server; port: number }> {
  const server = createHttpServer(originHandler(label));
  return { server, port: await listen(server) };
}

/** An HTTPS origin (its own test CA) named origin.test at 127.0.0.1, and a proxy with `policyText` in front of it. */
export async function startOriginBehindProxy(
  policyText: string,
  options: Partial<Pick<EgressProxyOptions, 'limits'>> = {},
): Promise<{ ca: OriginCa; port: number; tp: TestProxy }> {
  const ca = makeOriginCa();
  const port = (await startHttpsOrigin(ca)).port;
  const tp = await startTestProxy(policyText, { resolver: testResolver({ 'origin.test': ['127.0.0.1'] }), originCa: ca, ...options });
  return { ca, port, tp };
}

/** Maps test names to addresses; a function value can change its answer per call (rebinding). */
export function testResolver(map: Record<string, readonly string[] | (() => readonly string[])>): HostResolver & { lookups: string[] } {
  const lookups: string[] = [];
  return {
    lookups,
    async lookup(host: string) {
      lookups.push(host);
      const entry = map[host] ?? (host.endsWith('.origin.test') ? map['*.origin.test'] : undefined);
      if (entry === undefined) throw Object.assign(new Error(`test resolver: no such name ${host}`), { code: 'ENOTFOUND' });
      return typeof entry === 'function' ? entry() : entry;
    },
    namesForAddress: () => [],
  };
}

export interface TestProxy {
  readonly proxy: EgressProxy;
  readonly port: number;
  readonly url: string;
  readonly caPem: string;
  readonly caPath: string;
  readonly auditPath: string;
  readonly dir: string;
  setPolicy(text: string): void;
  records(until?: (records: AuditRecord[]) => boolean): Promise<AuditRecord[]>;
  /** The workspace CA's leaf counters (minted, cache hits, mints joined). */
  caStats(): CaStats;
  close(): Promise<void>;
}

const TEST_SERVER_FIRST_WAIT_MS = 5_000;

export async function startTestProxy(
  policyText: string,
  options: { resolver: HostResolver; originCa?: OriginCa; audit?: (real: AuditSink) => AuditSink } & Partial<Pick<EgressProxyOptions, 'limits' | 'secrets' | 'socketPath'>>,
): Promise<TestProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-test-'));
  let policy: Policy = parsePolicy(policyText, join(dir, 'policy.yaml'));
  const auditPath = join(dir, 'audit.jsonl');
  const realAudit = await openAuditLog({ path: auditPath, workspace: 'test' });
  const audit = options.audit ? options.audit(realAudit) : realAudit;
  const ca = await loadOrCreateCa({ dir: join(dir, 'ca'), workspace: 'test' });
  const proxy = await startEgressProxy({
    policy: () => policy,
    audit,
    ca,
    resolver: options.resolver,
    listen: { host: '127.0.0.1', port: 0 },
    workspace: 'test',
    ...(options.originCa ? { upstreamCa: [options.originCa.caPem] } : {}),
    // Tests that count records exactly must not see a slow TLS client (a loaded CI machine) cross the
    // server-first window and gain a tcp record; server-first.test.ts sets the window it tests.
    limits: { serverFirstWaitMs: TEST_SERVER_FIRST_WAIT_MS, ...options.limits },
    ...(options.secrets ? { secrets: options.secrets } : {}),
    ...(options.socketPath ? { socketPath: options.socketPath } : {}),
    drainMs: 200,
  });
  const port = proxy.addresses.tcp?.port ?? 0;
  return {
    proxy,
    port,
    url: `http://127.0.0.1:${port}`,
    caPem: ca.certPem,
    caPath: ca.certPath,
    auditPath,
    dir,
    setPolicy(text: string) {
      policy = parsePolicy(text, join(dir, 'policy.yaml'));
    },
    caStats: () => ca.stats(),
    async records(until?: (records: AuditRecord[]) => boolean) {
      // Close records are appended when sockets close, after the client saw its answer: poll briefly.
      for (let attempt = 0; ; attempt++) {
        await new Promise((r) => setTimeout(r, 50));
        const out: AuditRecord[] = [];
        for await (const record of readAuditRecords(auditPath)) out.push(record);
        if (until === undefined || until(out) || attempt > 60) return out;
      }
    },
    async close() {
      await proxy.close();
      await realAudit.close();
    },
  };
}

/** The records of one type whose host (or null host) matches. */
export function decisions(records: readonly AuditRecord[]): Array<AuditRecord & Extract<AuditEvent, { event: 'egress.decision' }>> {
  return records.filter((r): r is AuditRecord & Extract<AuditEvent, { event: 'egress.decision' }> => r.event === 'egress.decision');
}

/** curl through the proxy (async: the proxy runs in this process); never throws. */
export async function curl(args: string[]): Promise<{ code: number; status: number; body: string; headers: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'curl-'));
  const headersFile = join(dir, 'h');
  const bodyFile = join(dir, 'b');
  const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile('curl', ['-sS', '-o', bodyFile, '-D', headersFile, '-w', '%{http_code} %{http_connect}', '--max-time', '20', ...args], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? -1), stdout, stderr });
    });
  });
  const readOr = (f: string) => {
    try {
      return readFileSync(f, 'utf8');
    } catch {
      return '';
    }
  };
  // A refused CONNECT has no HTTP response of its own: its status is the CONNECT's.
  const [code, connectCode] = result.stdout.trim().split(' ').map(Number);
  const status = code !== undefined && code > 0 ? code : (connectCode ?? 0);
  return { code: result.code, status, body: readOr(bodyFile), headers: readOr(headersFile), stderr: result.stderr };
}

/** Sends raw bytes to the proxy and collects the answer until `done(text)` or the socket closes. */
export async function rawExchange(port: number, data: string | Buffer, done: (text: string) => boolean = () => false, timeoutMs = 10_000): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let text = '';
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('connect', () => socket.write(data));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
  });
}

/** Opens a CONNECT tunnel; resolves with the socket once a response head arrived (status in `status`). */
/** `proxy`: its TCP port on 127.0.0.1, or the path of its Unix socket. */
export async function connectTunnel(proxy: number | string, authority: string, host: string = authority): Promise<{ socket: import('node:net').Socket; status: number; head: string }> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const socket = connect(typeof proxy === 'number' ? { host: '127.0.0.1', port: proxy } : { path: proxy });
    let text = '';
    socket.on('connect', () => socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end >= 0) {
        socket.off('data', onData);
        resolve({ socket, status: Number(text.slice(9, 12)), head: text.slice(0, end) });
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

/** Collects what arrives on `socket` until `done(text)` holds or the socket closes. */
export function readUntil(socket: Socket, done: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const finish = (closed: boolean) => {
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve({ text, closed });
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) finish(false);
    };
    const onClose = () => finish(true);
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', () => undefined);
    socket.resume();
  });
}

/** A header's value from a raw response head (case-insensitive), or undefined. */
export function headerOf(head: string, name: string): string | undefined {
  const line = head.split('\r\n').find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line?.slice(name.length + 1).trim();
}
