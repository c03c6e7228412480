// The proxy end to end on loopback: curl, undici, node:http2 and ws through it to local HTTPS/HTTP
// origins (their own test CA), with the real policy engine, audit log and CA. Each case checks what
// the client got AND what the audit log says.
import { execFile } from 'node:child_process';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer } from 'node:http';
import { connect as http2Connect, constants as http2Constants, createSecureServer as createHttp2SecureServer } from 'node:http2';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { connectTunnel, curl, decisions, listen, makeOriginCa, startHttpOrigin, startHttpsOrigin, startTestProxy, testResolver, type OriginCa, type TestProxy } from './helpers.js';
import type { AuditRecord } from '../../src/audit/index.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: block-metadata
    action: deny
    cidrs: [169.254.169.254]
  - id: no-delete
    action: deny
    hosts: [origin.test]
    methods: [DELETE]
  - id: tunnel-only
    action: passthrough
    hosts: [pass.origin.test]
  - id: api-key
    action: inject
    hosts: [api.origin.test]
    headers:
      X-Api-Key: "\${secret:API_KEY}"
  - id: loopback-two
    action: allow
    cidrs: [127.0.0.2/32]
  - id: origins
    action: allow
    hosts: [origin.test, www.origin.test, bad.origin.test, ws.origin.test]
`;
const SECRET = 'sk-test-0123456789abcdef';

let ca: OriginCa;
let tp: TestProxy;
let https: number;
let http: number;
let untrusted: number;
let wss: number;
let ws: number;
const resolver = testResolver({
  'origin.test': ['127.0.0.1'],
  'www.origin.test': ['127.0.0.1'],
  'api.origin.test': ['127.0.0.1'],
  'pass.origin.test': ['127.0.0.1'],
  'bad.origin.test': ['127.0.0.1'],
  'ws.origin.test': ['127.0.0.1'],
  'internal.test': ['127.0.0.1'],
  'doh.origin.test': ['127.0.0.2'],
});

beforeAll(async () => {
  ca = makeOriginCa();
  https = (await startHttpsOrigin(ca)).port;
  http = (await startHttpOrigin()).port;
  untrusted = (await startHttpsOrigin(ca, { untrusted: true })).port;
  const tlsWs = createHttpsServer({ key: ca.key, cert: ca.cert });
  new WebSocketServer({ server: tlsWs }).on('connection', (s) => s.on('message', (m) => s.send(`echo:${m.toString()}`)));
  wss = await listen(tlsWs);
  const plainWs = createHttpServer();
  new WebSocketServer({ server: plainWs }).on('connection', (s) => s.on('message', (m) => s.send(`echo:${m.toString()}`)));
  ws = await listen(plainWs);
  tp = await startTestProxy(POLICY, { resolver, originCa: ca, secrets: (n) => (n === 'API_KEY' ? SECRET : undefined), socketPath: join(makeOriginCa().dir, 'proxy.sock') });
});
afterAll(async () => tp?.close());

const viaProxy = (url: string, ...extra: string[]) => curl(['-x', tp.url, '--cacert', tp.caPath, ...extra, url]);

describe('HTTPS interception', () => {
  it('curl over HTTP/2: decrypted, forwarded over h2, audited as connection + request + close', async () => {
    const r = await viaProxy(`https://origin.test:${https}/echo?q=1`, '--http2');
    expect(r.status).toBe(200);
    const body = JSON.parse(r.body);
    expect(body).toMatchObject({ url: '/echo?q=1', httpVersion: '2.0' });
    const closedBoth = (rs: AuditRecord[]) => {
      const c = decisions(rs).find((d) => d.path === '/echo')?.conn;
      return rs.filter((x) => x.event === 'egress.close' && x.conn === c).length === 2;
    };
    const records = await tp.records(closedBoth);
    const conn = decisions(records).find((d) => d.path === '/echo')?.conn;
    expect(conn).toBeDefined();
    const mine = records.filter((rec) => 'conn' in rec && rec.conn === conn);
    expect(mine.map((rec) => rec.event)).toEqual(['egress.decision', 'egress.decision', 'egress.close', 'egress.close']);
    expect(mine[0]).toMatchObject({ protocol: 'https', host: 'origin.test', ip: '127.0.0.1', decrypted: false, verdict: 'allow', rule: 'origins' });
    expect(mine[1]).toMatchObject({ method: 'GET', path: '/echo', decrypted: true, sni: 'origin.test', verdict: 'allow' });
  });

  it('curl --http1.0 (ALPN http/1.0, which the proxy does not list): the handshake still completes, the request is served', async () => {
    const r = await viaProxy(`https://origin.test:${https}/echo?v=10`, '--http1.0');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ url: '/echo?v=10' });
  });

  it('curl over HTTP/1.1 speaks HTTP/1.1 upstream', async () => {
    const r = await viaProxy(`https://origin.test:${https}/echo`, '--http1.1');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).httpVersion).toBe('1.1');
  });

  it('undici ProxyAgent: keep-alive, several requests on one tunnel', async () => {
    const before = tp.proxy.stats().tunnels;
    const dispatcher = new ProxyAgent({ uri: tp.url, requestTls: { ca: tp.caPem } });
    for (let i = 0; i < 3; i++) {
      const res = await undiciFetch(`https://www.origin.test:${https}/echo?i=${i}`, { dispatcher });
      expect(res.status).toBe(200);
      expect((await res.json()) as { url: string }).toMatchObject({ url: `/echo?i=${i}` });
    }
    // undici may open a second connection while the first is being released; keep-alive means
    // some tunnel carried more than one request.
    const tunnels = tp.proxy.stats().tunnels - before;
    expect(tunnels).toBeLessThan(3);
    const perConn = new Map<string, number>();
    for (const d of decisions(await tp.records())) if (d.path?.startsWith('/echo') && d.host === 'www.origin.test') perConn.set(d.conn, (perConn.get(d.conn) ?? 0) + 1);
    expect(Math.max(...perConn.values())).toBeGreaterThan(1);
    await dispatcher.close();
  });

  it('gRPC-style trailers pass over HTTP/2', async () => {
    const { socket, status } = await connectTunnel(tp.port, `origin.test:${https}`);
    expect(status).toBe(200);
    const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['h2'] });
    const session = http2Connect(`https://origin.test:${https}`, { createConnection: () => tls });
    const stream = session.request({ ':path': '/grpc', ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' });
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
    const trailers = await new Promise<Record<string, unknown>>((resolve) => stream.on('trailers', resolve));
    stream.resume();
    expect(trailers['grpc-status']).toBe('0');
    session.close();
  });

  it('WebSocket over intercepted TLS', async () => {
    const { socket, status } = await connectTunnel(tp.port, `ws.origin.test:${wss}`);
    expect(status).toBe(200);
    const tls = tlsConnect({ socket, servername: 'ws.origin.test', ca: tp.caPem, ALPNProtocols: ['http/1.1'] });
    const client = new WebSocket(`wss://ws.origin.test:${wss}/`, { createConnection: () => tls } as never);
    const reply = await new Promise<string>((resolve, reject) => {
      client.on('open', () => client.send('hi'));
      client.on('message', (m) => resolve(m.toString()));
      client.on('error', reject);
    });
    expect(reply).toBe('echo:hi');
    client.close();
  });

  it('streams 50 MB down and up without buffering it', async () => {
    const size = 50 * 1024 * 1024;
    const down = await viaProxy(`https://origin.test:${https}/bytes/${size}`, '--http1.1');
    expect(down.status).toBe(200);
    expect(down.body.length).toBe(size);
    const file = join(ca.dir, 'upload.bin');
    writeFileSync(file, Buffer.alloc(size, 0x62));
    const up = await viaProxy(`https://origin.test:${https}/upload`, '--http2', '--data-binary', `@${file}`);
    expect(up.status).toBe(200);
    expect(up.body).toBe(String(size));
  }, 60_000);
});

describe('plain HTTP and WebSocket', () => {
  it('absolute-form GET is decided and forwarded', async () => {
    const r = await curl(['-x', tp.url, `http://origin.test:${http}/echo`]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ label: 'http-origin', url: '/echo' });
    const d = decisions(await tp.records()).filter((x) => x.protocol === 'http' && x.host === 'origin.test');
    expect(d.some((x) => x.path === '/echo' && x.method === 'GET' && x.decrypted === false)).toBe(true);
  });

  it('plain WebSocket upgrade', async () => {
    const reply = await new Promise<string>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port: tp.port }, () => {
        socket.write(`GET http://ws.origin.test:${ws}/ HTTP/1.1\r\nHost: ws.origin.test:${ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      });
      let buf = Buffer.alloc(0);
      let upgraded = false;
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (!upgraded) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          expect(buf.subarray(0, 12).toString()).toBe('HTTP/1.1 101');
          buf = buf.subarray(end + 4);
          upgraded = true;
          const mask = Buffer.from([1, 2, 3, 4]);
          const payload = Buffer.from('hi').map((b, i) => b ^ (mask[i % 4] as number));
          socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | 2]), mask, payload]));
        }
        if (upgraded && buf.length >= 2 && buf.length >= 2 + (buf[1] as number)) {
          resolve(buf.subarray(2, 2 + (buf[1] as number)).toString());
          socket.destroy();
        }
      });
    });
    expect(reply).toBe('echo:hi');
  });

  it('the Unix socket serves the same stack', async () => {
    const answer = await new Promise<string>((resolve) => {
      const socket = netConnect(tp.proxy.addresses.socket as string, () => socket.write(`GET http://origin.test:${http}/echo HTTP/1.1\r\nHost: origin.test:${http}\r\nConnection: close\r\n\r\n`));
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(answer.startsWith('HTTP/1.1 200')).toBe(true);
  });
});

describe('absolute-form https:// requests (busybox and Alpine wget ask an HTTP proxy so, not with CONNECT)', () => {
  /** A raw request to the proxy's TCP port; resolves with what came back until the proxy closed. */
  const rawRequest = (head: string) =>
    new Promise<string>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port: tp.port }, () => socket.write(head));
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString()));
      socket.on('close', () => resolve(text));
    });

  // busybox wget reads http_proxy for https:// URLs too, and sends its FIN right behind the request.
  const wget = (url: string) =>
    new Promise<string>((resolve, reject) =>
      execFile('busybox', ['wget', '-q', '-O', '-', url], { env: { ...process.env, https_proxy: tp.url, http_proxy: tp.url } }, (err, stdout, stderr) =>
        err === null ? resolve(stdout) : reject(new Error(`busybox wget failed: ${stderr}`)),
      ),
    );

  it('busybox wget: decided as https, fetched over TLS the proxy verified, each request recorded; plain http too, its FIN notwithstanding', async () => {
    expect(JSON.parse(await wget(`https://origin.test:${https}/echo?via=wget`))).toMatchObject({ label: 'https-origin', method: 'GET', url: '/echo?via=wget' });
    expect(JSON.parse(await wget(`http://origin.test:${http}/echo?via=wget`))).toMatchObject({ label: 'http-origin', url: '/echo?via=wget' });
    const mine = decisions(await tp.records()).filter((d) => d.host === 'origin.test' && d.protocol === 'https' && d.path === '/echo');
    expect(mine.at(-1)).toMatchObject({ method: 'GET', verdict: 'allow', rule: 'origins', decrypted: false, ip: '127.0.0.1' });
  });

  it('request rules apply (a DELETE rule), no secret is injected (nothing was intercepted), an untrusted upstream is refused', async () => {
    expect(await rawRequest(`DELETE https://origin.test:${https}/x HTTP/1.1\r\nHost: origin.test:${https}\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 [^]*x-microagent-reason: rule_deny/i);
    const injected = await rawRequest(`GET https://api.origin.test:${https}/header-present/x-api-key HTTP/1.1\r\nHost: api.origin.test:${https}\r\nConnection: close\r\n\r\n`);
    expect(injected).toMatch(/^HTTP\/1\.1 200/);
    expect(injected).toContain('\r\nabsent\r\n');
    const untrustedAnswer = await rawRequest(`GET https://bad.origin.test:${untrusted}/ HTTP/1.1\r\nHost: bad.origin.test:${untrusted}\r\nConnection: close\r\n\r\n`);
    expect(untrustedAnswer).toMatch(/^HTTP\/1\.1 502/);
  });
});

describe('passthrough and mode off', () => {
  it('a passthrough rule splices TLS untouched (the origin certificate reaches the client)', async () => {
    const ok = await curl(['-x', tp.url, '--cacert', ca.caPath, `https://pass.origin.test:${https}/echo`]);
    expect(ok.status).toBe(200);
    const intercepted = await curl(['-x', tp.url, '--cacert', tp.caPath, `https://pass.origin.test:${https}/echo`]);
    expect(intercepted.code).not.toBe(0);
    const d = decisions(await tp.records()).filter((x) => x.host === 'pass.origin.test');
    expect(d[0]).toMatchObject({ rule: 'tunnel-only', decrypted: false, verdict: 'allow' });
    expect(d.some((x) => x.decrypted)).toBe(false);
  });

  it('mode off: plain tunnel recorded as mediation_off', async () => {
    tp.setPolicy(POLICY.replace('mode: guarded', 'mode: off'));
    try {
      const r = await curl(['-x', tp.url, '--cacert', ca.caPath, `https://www.origin.test:${https}/echo`]);
      expect(r.status).toBe(200);
      const records = await tp.records();
      const d = decisions(records).filter((x) => x.host === 'www.origin.test' && x.mode === 'off');
      expect(d[0]).toMatchObject({ reason: 'mediation_off', decrypted: false });
      const close = records.find((x) => x.event === 'egress.close' && x.conn === d[0]?.conn);
      expect(close).toMatchObject({ reason: 'mediation_off' });
    } finally {
      tp.setPolicy(POLICY);
    }
  });
});

describe('deny paths: 403 + reason header + audit record', () => {
  const reasonOf = (headers: string) => /x-microagent-reason: (\S+)/i.exec(headers)?.[1];

  it('method rule inside TLS', async () => {
    const r = await viaProxy(`https://origin.test:${https}/echo`, '-X', 'DELETE');
    expect(r.status).toBe(403);
    expect(reasonOf(r.headers)).toBe('rule_deny');
    expect(r.body).toBe(`microagent: denied by rule "no-delete" (rule_deny) for origin.test:${https}: a deny rule matched\n`);
    expect(decisions(await tp.records()).some((x) => x.method === 'DELETE' && x.rule === 'no-delete' && x.verdict === 'deny')).toBe(true);
  });

  it('CONNECT to the metadata address: 403 on the CONNECT itself', async () => {
    const { status, head, socket } = await connectTunnel(tp.port, '169.254.169.254:443');
    socket.destroy();
    expect(status).toBe(403);
    expect(head).toMatch(/X-Microagent-Reason: rule_deny/);
    expect(decisions(await tp.records()).some((x) => x.ip === '169.254.169.254' && x.rule === 'block-metadata')).toBe(true);
  });

  it('an internal address no rule names (guarded mode still denies it)', async () => {
    const r = await viaProxy(`https://internal.test:${https}/echo`);
    expect(r.status).toBe(403);
    expect(r.headers).toMatch(/X-Microagent-Reason: internal_address/);
    expect(decisions(await tp.records()).some((x) => x.host === 'internal.test' && x.reason === 'internal_address' && x.ip === '127.0.0.1')).toBe(true);
  });

  it('upstream certificate from an untrusted CA: 502 upstream_cert_invalid, audited', async () => {
    const r = await viaProxy(`https://bad.origin.test:${untrusted}/echo`);
    expect(r.status).toBe(502);
    expect(reasonOf(r.headers)).toBe('upstream_cert_invalid');
    expect(decisions(await tp.records()).some((x) => x.host === 'bad.origin.test' && x.reason === 'upstream_cert_invalid' && x.verdict === 'deny')).toBe(true);
  });

  it('without extra upstream CAs only the public roots count: the test origin is upstream_cert_invalid', async () => {
    const bare = await startTestProxy(POLICY, { resolver });
    try {
      const r = await curl(['-x', bare.url, '--cacert', bare.caPath, `https://origin.test:${https}/echo`]);
      expect(r.status).toBe(502);
      expect(reasonOf(r.headers)).toBe('upstream_cert_invalid');
    } finally {
      await bare.close();
    }
  });

  it('inject adds the secret upstream, withholds an echo of announced length whole (502), and never records the value', async () => {
    const present = await viaProxy(`https://api.origin.test:${https}/header-present/x-api-key`);
    expect(present.status).toBe(200);
    expect(present.body).toBe('present');
    const echoed = await viaProxy(`https://api.origin.test:${https}/echo-header/x-api-key`);
    expect(echoed.status).toBe(502);
    expect(reasonOf(echoed.headers)).toBe('secret_echo');
    expect(echoed.body).not.toContain(SECRET);
    const records = await tp.records();
    expect(decisions(records).some((x) => x.host === 'api.origin.test' && x.secret_names?.includes('API_KEY'))).toBe(true);
    expect(decisions(records).some((x) => x.reason === 'secret_echo')).toBe(true);
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(tp.auditPath, 'utf8')).not.toContain(SECRET);
  });

  it('DNS-over-HTTPS is denied', async () => {
    // Allowed by an address rule only: no rule names the host, so DoH-looking requests are refused.
    const r = await viaProxy(`https://doh.origin.test:${https}/dns-query?dns=AAABAAAB`, '-H', 'accept: application/dns-message');
    expect(r.status).toBe(403);
    expect(reasonOf(r.headers)).toBe('doh_denied');
    expect(decisions(await tp.records()).some((x) => x.reason === 'doh_denied' && x.path === '/dns-query')).toBe(true);
  });
});

describe('Expect: 100-continue (curl asks it for uploads over 1 MiB on HTTP/1.1)', () => {
  let file: string;
  beforeAll(() => {
    file = join(makeOriginCa().dir, 'upload.bin');
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 0x63));
  });
  /** curl's own account: the status and how many body bytes it sent. */
  const upload = (url: string, ...extra: string[]) =>
    new Promise<{ status: number; sent: number; body: string }>((resolve, reject) => {
      execFile('curl', ['-sS', '-x', tp.url, '--cacert', tp.caPath, '--http1.1', '-T', file, '-w', '\n%{http_code} %{size_upload}', '--max-time', '20', ...extra, url], (err, stdout) => {
        if (err !== null) return reject(err);
        const lines = stdout.split('\n');
        const [status, sent] = (lines.pop() as string).split(' ').map(Number);
        resolve({ status: status as number, sent: sent as number, body: lines.join('\n') });
      });
    });

  it.each([
    ['HTTPS', () => `https://origin.test:${https}/upload`],
    ['plain HTTP', () => `http://origin.test:${http}/upload`],
  ])('%s: a denied upload is refused before its body is sent; an allowed one goes through whole', async (_, url) => {
    const denied = await upload(url(), '-X', 'DELETE');
    expect([denied.status, denied.sent]).toEqual([403, 0]);
    const allowed = await upload(url());
    expect([allowed.status, allowed.sent, allowed.body]).toEqual([200, 3 * 1024 * 1024, String(3 * 1024 * 1024)]);
  });
});

describe('a request body the answer does not wait for', () => {
  // An origin that answers at once, before reading the upload (as many do for an error or a cache hit).
  let early: number;
  let upload: string;
  beforeAll(async () => {
    early = await listen(createHttpsServer({ key: ca.key, cert: ca.cert }, (_req, res) => res.end('early\n')));
    upload = join(makeOriginCa().dir, 'upload.bin');
    writeFileSync(upload, Buffer.alloc(2 * 1024 * 1024, 0x61)); // far past HTTP/2's 64 KiB initial window
  });

  it('an upload answered early completes over HTTP/1.1 (curl): the rest of the body is drained', async () => {
    const r = await viaProxy(`https://origin.test:${early}/upload`, '--http1.1', '--data-binary', `@${upload}`);
    expect(r.code).toBe(0);
    expect(r.status).toBe(200);
    expect(r.body).toBe('early\n');
  });

  // curl 7.88 itself can stall on an HTTP/2 upload once the answer is complete (with or without a
  // proxy), so node's client is the HTTP/2 guest here.
  it('an upload answered early completes over HTTP/2: the guest gets the answer and its stream closes', async () => {
    const { socket } = await connectTunnel(tp.port, `origin.test:${early}`);
    const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['h2'] });
    const session = http2Connect(`https://origin.test:${early}`, { createConnection: () => tls });
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/upload' });
      stream.end(Buffer.alloc(2 * 1024 * 1024, 0x61));
      let body = '';
      stream.on('data', (c: Buffer) => (body += c.toString()));
      const status = await new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
      await new Promise<void>((resolve) => stream.once('close', () => resolve()));
      expect(status).toBe(200);
      expect(body).toBe('early\n');
    } finally {
      session.destroy();
    }
  });

  it.each([['--http2'], ['--http1.1']])('an upload denied by a method rule gets its 403 at once (%s)', async (version) => {
    const r = await viaProxy(`https://origin.test:${https}/echo`, version, '-X', 'DELETE', '--data-binary', `@${upload}`);
    expect(r.code).toBe(0);
    expect(r.status).toBe(403);
  });
});

describe('inject: answers scanned for an echoed secret', () => {
  // An LLM-API-like origin: server-sent events without a length, and answers compressed even when
  // asked not to be. `/sse-gated` sends its second event only once the test has read the first.
  let release: () => void = () => undefined;
  let port: number;
  const events: string[] = [];
  beforeAll(async () => {
    const server = createHttpsServer({ key: ca.key, cert: ca.cert }, (req, res) => {
      const key = String(req.headers['x-api-key'] ?? '');
      if (req.url === '/sse-gated') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: one\n\n');
        new Promise<void>((resolve) => (release = resolve)).then(() => res.end('data: two\n\n'));
      } else if (req.url === '/sse-echo') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const parts = ['data: one\n\n', `data: ${key.slice(0, 9)}`, `${key.slice(9)}\n\n`, 'data: three\n\n'];
        const next = () => (parts.length === 0 ? res.end() : res.write(parts.shift(), () => setTimeout(next, 20)));
        next();
      } else {
        const body = gzipSync(JSON.stringify(req.url === '/gzip-echo' ? { key } : { ok: true }));
        const encoding = req.url === '/zstd' ? 'zstd' : 'gzip'; // a coding the scan cannot undo
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': encoding, 'content-length': String(body.length) });
        res.end(body);
      }
      events.push(`${req.url} accept-encoding=${String(req.headers['accept-encoding'])}`);
    });
    port = await listen(server);
  });
  const dispatcher = () => new ProxyAgent({ uri: tp.url, requestTls: { ca: tp.caPem } });

  /** GET `path` through the proxy, speaking HTTP/1.1 (undici) or HTTP/2 (node:http2) to it: the body's chunks as they arrive. */
  async function* streamed(path: string, guest: 'h1' | 'h2'): AsyncGenerator<string> {
    if (guest === 'h1') {
      const res = await undiciFetch(`https://api.origin.test:${port}${path}`, { dispatcher: dispatcher() });
      for await (const chunk of res.body as ReadableStream<Uint8Array>) yield Buffer.from(chunk).toString();
      return;
    }
    const { socket } = await connectTunnel(tp.port, `api.origin.test:${port}`);
    const tls = tlsConnect({ socket, servername: 'api.origin.test', ca: tp.caPem, ALPNProtocols: ['h2'] });
    const session = http2Connect(`https://api.origin.test:${port}`, { createConnection: () => tls });
    try {
      for await (const chunk of session.request({ ':path': path })) yield (chunk as Buffer).toString();
    } finally {
      session.close();
    }
  }

  it.each([['h1' as const], ['h2' as const]])('a streamed answer streams through the scan to a %s guest: the first event arrives before the origin sends the next', async (guest) => {
    const chunks = streamed('/sse-gated', guest);
    // Were the answer collected before it is forwarded, this read would wait forever: the origin
    // holds its last event back until it is released below.
    expect((await chunks.next()).value).toBe('data: one\n\n');
    release();
    let rest = '';
    for await (const chunk of chunks) rest += chunk;
    expect(rest).toBe('data: two\n\n');
    expect(events).toContain('/sse-gated accept-encoding=identity');
  });

  it('an echo split across two chunks of a stream cuts the answer before any byte of it, recorded as secret_echo', async () => {
    const res = await undiciFetch(`https://api.origin.test:${port}/sse-echo`, { dispatcher: dispatcher() });
    expect(res.status).toBe(200); // sent before the echo appeared
    let received = '';
    const outcome = await (async () => {
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      try {
        for (let r = await reader.read(); !r.done; r = await reader.read()) received += Buffer.from(r.value).toString();
        return 'complete';
      } catch {
        return 'cut';
      }
    })();
    expect(outcome).toBe('cut');
    expect(received).toBe('data: one\n\ndata: '); // the secret's first 9 bytes were held, never sent
    const records = await tp.records((rs) => decisions(rs).some((d) => d.path === '/sse-echo' && d.reason === 'secret_echo'));
    expect(decisions(records).find((d) => d.path === '/sse-echo' && d.reason === 'secret_echo')).toMatchObject({ verdict: 'deny', status: 200 });
  });

  it('a compressed answer is scanned decompressed: an echo is withheld (502), a clean one passes as sent, an unknown coding is withheld', async () => {
    const echoed = await viaProxy(`https://api.origin.test:${port}/gzip-echo`);
    expect(echoed.status).toBe(502);
    expect(/x-microagent-reason: (\S+)/i.exec(echoed.headers)?.[1]).toBe('secret_echo');
    const clean = await viaProxy(`https://api.origin.test:${port}/gzip-clean`, '--compressed');
    expect(clean.status).toBe(200);
    expect(JSON.parse(clean.body)).toEqual({ ok: true });
    const unknown = await viaProxy(`https://api.origin.test:${port}/zstd`);
    expect(unknown.status).toBe(502);
    expect(/x-microagent-reason: (\S+)/i.exec(unknown.headers)?.[1]).toBe('unscannable_response');
  });
});

describe('inject over WebSocket: everything the upstream answers is scanned', () => {
  // A WebSocket origin that reports what it was sent and, asked to, echoes the injected key; and
  // one that refuses every upgrade with a body quoting the key (a typical error page).
  let wsPort: number;
  let refusingPort: number;
  beforeAll(async () => {
    const server = createHttpsServer({ key: ca.key, cert: ca.cert });
    new WebSocketServer({ server }).on('connection', (socket, req) => {
      const key = String(req.headers['x-api-key'] ?? '');
      socket.send(`authorized=${key === SECRET} extensions=${req.headers['sec-websocket-extensions'] ?? 'none'}`);
      socket.on('message', (m) => socket.send(m.toString() === 'echo-key' ? `key=${key}` : `echo:${m.toString()}`));
    });
    wsPort = await listen(server);
    const refusing = createHttpsServer({ key: ca.key, cert: ca.cert });
    refusing.on('upgrade', (req, socket: import('node:net').Socket) => {
      if (req.url === '/clean') return void socket.end('HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n7\r\ngo away\r\n0\r\n\r\n');
      const body = `bad key ${String(req.headers['x-api-key'])}`;
      socket.end(`HTTP/1.1 401 Unauthorized\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    });
    refusingPort = await listen(refusing);
  });

  async function openSocket(port: number, path = '/'): Promise<WebSocket> {
    const { socket } = await connectTunnel(tp.port, `api.origin.test:${port}`);
    const tls = tlsConnect({ socket, servername: 'api.origin.test', ca: tp.caPem, ALPNProtocols: ['http/1.1'] });
    return new WebSocket(`wss://api.origin.test:${port}${path}`, { createConnection: () => tls } as never);
  }

  it('the secret goes upstream, compression is not offered, and an echo in a frame cuts the connection before it', async () => {
    const client = await openSocket(wsPort);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      client.on('message', (m) => {
        messages.push(m.toString());
        if (messages.length === 1) client.send('hello');
        if (messages.length === 2) client.send('echo-key');
      });
      client.on('close', () => resolve());
      client.on('error', () => undefined); // the cut may surface as an error before close
      setTimeout(() => reject(new Error(`not cut; got ${JSON.stringify(messages)}`)), 5000);
    });
    expect(messages).toEqual(['authorized=true extensions=none', 'echo:hello']);
    const records = await tp.records((rs) => decisions(rs).some((d) => d.host === 'api.origin.test' && d.port === wsPort && d.reason === 'secret_echo'));
    expect(decisions(records).find((d) => d.port === wsPort && d.reason === 'secret_echo')).toMatchObject({ verdict: 'deny', status: 101 });
  });

  it('a refused upgrade whose answer quotes the secret is withheld: 502 secret_echo', async () => {
    const client = await openSocket(refusingPort);
    const refusal = await new Promise<{ status: number; reason: string }>((resolve) => {
      client.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-microagent-reason']) }));
      client.on('error', () => undefined);
    });
    expect(refusal).toEqual({ status: 502, reason: 'secret_echo' });
  });

  it('a refused upgrade that does not quote it reaches the guest intact, re-framed', async () => {
    const client = await openSocket(refusingPort, '/clean');
    const refusal = await new Promise<{ status: number; body: string }>((resolve) => {
      client.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      client.on('error', () => undefined);
    });
    expect(refusal).toEqual({ status: 403, body: 'go away' });
  });
});

describe('an origin that accepts and never finishes its TLS handshake', () => {
  it('costs the request connectTimeoutMs, then a 502 upstream_unreachable with the cause recorded', async () => {
    const silent = createNetServer((socket) => socket.on('error', () => undefined));
    const port = await listen(silent as unknown as Parameters<typeof listen>[0]);
    const quick = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { connectTimeoutMs: 300 } });
    try {
      const r = await curl(['-x', quick.url, '--cacert', quick.caPath, '--http1.1', '-m', '20', `https://origin.test:${port}/`]);
      expect([r.code, r.status, /x-microagent-reason: (\S+)/i.exec(r.headers)?.[1]]).toEqual([0, 502, 'upstream_unreachable']);
      const closes = (await quick.records((all) => all.some((x) => x.event === 'egress.close' && x.reason === 'upstream_unreachable')))
        .filter((x) => x.event === 'egress.close' && x.reason === 'upstream_unreachable');
      expect(closes.map((x) => (x as { error?: string }).error)).toEqual(['TLS handshake to the origin timed out after 300 ms']);
    } finally {
      await quick.close();
      silent.close();
    }
  });
});

describe('an origin that answers with HTTP the proxy does not pass on', () => {
  // Each path answers with one fault; the body "hello" must never reach the guest.
  const answers: Record<string, string> = {
    '/cl-and-te': 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    '/two-lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!',
    '/bad-status': 'HTTP/1.1 2000 OK\r\ncontent-length: 5\r\n\r\nhello',
  };
  let origin: number;
  beforeAll(async () => {
    const server = createTlsServer({ key: ca.key, cert: ca.cert, ALPNProtocols: ['http/1.1'] }, (socket) => {
      let head = '';
      socket.on('error', () => undefined);
      socket.on('data', (chunk) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        const path = head.split(' ')[1] ?? '';
        // Closing mid-head: the upstream went away, which is not a malformed answer.
        if (path === '/cut') return void socket.end('HTTP/1.1 200 OK\r\ncontent-le');
        socket.end(answers[path] ?? 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
      });
    });
    origin = await listen(server as unknown as Parameters<typeof listen>[0]);
  });

  it.each([
    ['GET', '/cl-and-te', 'upstream_bad_response', ['smuggling']],
    ['POST', '/cl-and-te', 'upstream_bad_response', ['smuggling']],
    ['GET', '/two-lengths', 'upstream_bad_response', ['smuggling']],
    ['POST', '/two-lengths', 'upstream_bad_response', ['smuggling']],
    ['GET', '/bad-status', 'upstream_bad_response', []],
    ['GET', '/cut', 'upstream_unreachable', []],
  ])('%s %s (lean client for GET, node\'s for POST) -> 502 %s %j', async (method, path, reason, signals) => {
    const body = method === 'POST' ? ['--data-binary', 'x'] : [];
    const r = await curl(['-x', tp.url, '--cacert', tp.caPath, '--http1.1', '-X', method, ...body, `https://origin.test:${origin}${path}`]);
    expect([r.status, /x-microagent-reason: (\S+)/i.exec(r.headers)?.[1]]).toEqual([502, reason]);
    expect(r.body).not.toContain('hello');
    const refusal = (all: AuditRecord[]) => decisions(all).find((x) => x.path === path && x.method === method && x.status === 502);
    const decision = refusal(await tp.records((all) => refusal(all) !== undefined));
    expect(decision).toMatchObject({ verdict: 'deny', reason, signals, port: origin });
  });
});

describe('an HTTP/2 origin that resets its stream mid-body', () => {
  it('is a reset for the guest too, never a truncated body passed off as complete', async () => {
    const server = createHttp2SecureServer({ key: ca.key, cert: ca.cert }, (_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(300_000, 120), () => setTimeout(() => res.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR), 50));
    });
    const port = await listen(server);
    try {
      const r = await curl(['-x', tp.url, '--cacert', tp.caPath, '--http2', `https://origin.test:${port}/reset`]);
      expect(r.code).toBe(92); // curl: the HTTP/2 stream was not closed cleanly
      expect(r.stderr).toContain('INTERNAL_ERROR');
    } finally {
      server.close();
    }
  });
});

describe('the leaf is minted at the CONNECT, while the guest prepares its ClientHello', () => {
  const asked = () => {
    const s = tp.caStats();
    return s.minted + s.cacheHits + s.coalesced;
  };
  it('an intercepted CONNECT asks the CA for its host\'s leaf before any byte of TLS; a passthrough one never does', async () => {
    const before = asked();
    const intercepted = await connectTunnel(tp.port, `www.origin.test:${https}`);
    expect(intercepted.status).toBe(200);
    for (let i = 0; i < 50 && asked() === before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(asked()).toBe(before + 1);
    intercepted.socket.destroy();
    const passthrough = await connectTunnel(tp.port, `pass.origin.test:${https}`);
    expect(passthrough.status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    passthrough.socket.destroy();
    expect(asked()).toBe(before + 1);
  });
});

describe('the upstream handshake runs alongside the guest\'s', () => {
  /** An HTTP/1.1-only TLS origin counting its handshakes and requests (fresh port: no pooled connection). */
  async function countingOrigin() {
    const seen = { handshakes: 0, requests: [] as string[] };
    const server = createHttpsServer({ key: ca.key, cert: ca.cert }, (req, res) => {
      seen.requests.push(`${req.method} ${req.url}`);
      res.end('ok');
    });
    server.on('secureConnection', () => seen.handshakes++);
    return { seen, port: await listen(server), close: () => server.close() };
  }

  it.each([
    ['a guest offering h2 too (offered HTTP/1.1, the socket the h2 attempt dialled adopted)', '--http2'],
    ['an HTTP/1.1 guest (lean exchange)', '--http1.1'],
  ])('%s to an HTTP/1.1-only origin: its first request uses the connection dialled during its handshake', async (_, flag) => {
    const o = await countingOrigin();
    const r = await viaProxy(`https://origin.test:${o.port}/first`, flag);
    expect([r.status, r.body]).toEqual([200, 'ok']);
    expect(o.seen).toEqual({ handshakes: 1, requests: ['GET /first'] });
    o.close();
  });

  it('a request its rule denies never reaches the origin, though the allowed CONNECT already dialled it', async () => {
    const o = await countingOrigin();
    const r = await viaProxy(`https://origin.test:${o.port}/gone`, '-X', 'DELETE', '--http1.1');
    expect(r.status).toBe(403);
    // The prewarm runs alongside: its handshake may complete after the deny was answered.
    for (let i = 0; i < 500 && o.seen.handshakes === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(o.seen).toEqual({ handshakes: 1, requests: [] });
    o.close();
  });

  it('waits for the CONNECT\'s allow to be durable: until then the guest\'s handshake dials nothing', async () => {
    const o = await countingOrigin();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow = await startTestProxy(POLICY, {
      resolver,
      originCa: ca,
      audit: (real) => ({
        // The tunnel's own allow (no method: the CONNECT) is held back; everything else is written at once.
        append: (e) => (e.event === 'egress.decision' && !('method' in e) ? held.then(() => real.append(e)) : real.append(e)),
        get healthy() {
          return real.healthy;
        },
        close: () => real.close(),
      }),
    });
    try {
      const { socket, status } = await connectTunnel(slow.port, `origin.test:${o.port}`);
      expect(status).toBe(200);
      const tls = tlsConnect({ socket, servername: 'origin.test', ca: slow.caPem, ALPNProtocols: ['http/1.1'] });
      await new Promise((resolve) => tls.once('secureConnect', resolve));
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(o.seen.handshakes).toBe(0);
      release();
      for (let i = 0; i < 500 && o.seen.handshakes === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(o.seen).toEqual({ handshakes: 1, requests: [] });
      tls.destroy();
    } finally {
      release();
      await slow.close();
      o.close();
    }
  });

  it('a tunnel refused at its ClientHello (SNI naming another host) dials nothing', async () => {
    const o = await countingOrigin();
    const { socket, status } = await connectTunnel(tp.port, `origin.test:${o.port}`);
    expect(status).toBe(200);
    const tls = tlsConnect({ socket, servername: 'www.origin.test', ca: tp.caPem });
    await new Promise((resolve) => tls.once('error', resolve).once('close', resolve));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(o.seen.handshakes).toBe(0);
    o.close();
  });
});
