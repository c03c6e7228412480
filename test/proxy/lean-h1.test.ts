// The lean HTTP/1.1 path of intercepted connections (h1-serve.ts), through a real CONNECT tunnel and
// real TLS to a real origin: keep-alive and pipelining, HEAD, streamed and chunked answers with
// trailers, the hand-over to node's parser mid-connection (a body after a GET, smuggling, oversize),
// identity binding, Connection: close and slowloris, each checked on the wire and in the audit log.
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxyAgent, request } from 'undici';
import type { AuditRecord } from '../../src/audit/index.js';
import { connectTunnel, curl, decisions, headerOf, makeOriginCa, startHttpsOrigin, startTestProxy, testResolver, type OriginCa, type TestProxy } from './helpers.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: no-blocked
    action: deny
    hosts: [origin.test]
    paths: ["/blocked/**"]
  - id: origins
    action: allow
    hosts: [origin.test, other.origin.test]
`;

let ca: OriginCa;
let tp: TestProxy;
let port: number;
const resolver = testResolver({ 'origin.test': ['127.0.0.1'], 'other.origin.test': ['127.0.0.1'] });

beforeAll(async () => {
  ca = makeOriginCa();
  port = (await startHttpsOrigin(ca)).port;
  tp = await startTestProxy(POLICY, { resolver, originCa: ca });
});
afterAll(async () => tp?.close());

/** One intercepted HTTP/1.1 connection spoken byte by byte. */
async function openLean(proxy: TestProxy = tp, originPort = port): Promise<{ tls: TLSSocket; read(until: (text: string) => boolean): Promise<string>; closed: Promise<void> }> {
  const { socket, status } = await connectTunnel(proxy.port, `origin.test:${originPort}`);
  expect(status).toBe(200);
  const tls = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ socket, servername: 'origin.test', ca: proxy.caPem, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
    s.once('error', reject);
  });
  expect(tls.alpnProtocol).toBe('http/1.1');
  let text = '';
  let waiter: (() => void) | null = null;
  tls.on('data', (c: Buffer) => {
    text += c.toString('latin1');
    waiter?.();
  });
  const closed = new Promise<void>((resolve) => tls.on('close', () => resolve()));
  tls.on('error', () => undefined);
  return {
    tls,
    closed,
    read: (until) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no complete answer; got ${JSON.stringify(text)}`)), 10_000);
        const check = () => {
          if (!until(text)) return;
          clearTimeout(timer);
          waiter = null;
          const got = text;
          text = '';
          resolve(got);
        };
        waiter = check;
        check();
      }),
  };
}

/** True once `text` holds `count` complete answers framed by Content-Length or chunked encoding. */
function answers(count: number, bodiless = false) {
  return (text: string): boolean => {
    let at = 0;
    for (let n = 0; n < count; n++) {
      const end = text.indexOf('\r\n\r\n', at);
      if (end < 0) return false;
      const head = text.slice(at, end);
      at = end + 4;
      if (bodiless) continue;
      const length = headerOf(head, 'content-length');
      if (length !== undefined) at += Number(length);
      else if (headerOf(head, 'transfer-encoding') === 'chunked') {
        const last = text.indexOf('\r\n0\r\n', at - 2);
        if (last < 0) return false;
        const tail = text.indexOf('\r\n\r\n', last + 2);
        if (tail < 0) return false;
        at = tail + 4;
      }
      if (at > text.length) return false;
    }
    return true;
  };
}

/** The body of one complete answer, chunked encoding removed. */
function bodyOf(text: string): string {
  const end = text.indexOf('\r\n\r\n');
  const rest = text.slice(end + 4);
  if (headerOf(text.slice(0, end), 'transfer-encoding') !== 'chunked') return rest;
  let out = '';
  for (let at = 0; ; ) {
    const line = rest.indexOf('\r\n', at);
    const size = parseInt(rest.slice(at, line), 16);
    if (size === 0) return out;
    out += rest.slice(line + 2, line + 2 + size);
    at = line + 2 + size + 2;
  }
}

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: origin.test:${port}\r\n${extra}\r\n`;
const requestsFor = (records: AuditRecord[], conn: string) => decisions(records).filter((d) => d.conn === conn && d.method !== undefined);

describe('lean HTTP/1.1 inside intercepted TLS', () => {
  it('keep-alive and pipelining: answers in order, one decision and one close record per request', async () => {
    const lean = await openLean();
    lean.tls.write(get('/echo-header/x-a', 'X-A: first\r\n'));
    const one = await lean.read(answers(1));
    expect(one).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    // Lowercase framing headers are the lean writer's (node's ServerResponse writes `Connection:`).
    expect(one).toContain('\r\nconnection: keep-alive\r\n');
    expect(bodyOf(one)).toBe('first');
    lean.tls.write(get('/echo-header/x-a', 'X-A: second\r\n') + get('/echo-header/x-a', 'X-A: third\r\n'));
    const two = await lean.read(answers(2));
    expect(two.indexOf('second')).toBeGreaterThan(0);
    expect(two.indexOf('third')).toBeGreaterThan(two.indexOf('second'));
    lean.tls.end();
    await lean.closed;
    const records = await tp.records((rs) => rs.filter((r) => r.event === 'egress.close' && r.status === 200).length >= 3);
    const conn = decisions(records).find((d) => d.path === '/echo-header/x-a')?.conn as string;
    expect(requestsFor(records, conn).map((d) => [d.method, d.path, d.verdict, d.decrypted, d.sni])).toEqual([
      ['GET', '/echo-header/x-a', 'allow', true, 'origin.test'],
      ['GET', '/echo-header/x-a', 'allow', true, 'origin.test'],
      ['GET', '/echo-header/x-a', 'allow', true, 'origin.test'],
    ]);
  });

  it('HEAD keeps the origin Content-Length and sends no body; large bodies stream with their length', async () => {
    const lean = await openLean();
    lean.tls.write(`HEAD /bytes/200000 HTTP/1.1\r\nHost: origin.test:${port}\r\n\r\n`);
    const head = await lean.read(answers(1, true));
    expect(headerOf(head, 'content-length')).toBe('200000');
    lean.tls.write(get('/bytes/200000'));
    const big = await lean.read(answers(1));
    expect(headerOf(big, 'content-length')).toBe('200000');
    expect(big.length - big.indexOf('\r\n\r\n') - 4).toBe(200000);
    lean.tls.destroy();
  });

  it('an answer of unknown length is chunked to the guest, trailers included', async () => {
    const lean = await openLean();
    lean.tls.write(get('/grpc', 'TE: trailers\r\n'));
    const text = await lean.read(answers(1));
    expect(headerOf(text, 'transfer-encoding')).toBe('chunked');
    expect(text).toMatch(/\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n$/);
    lean.tls.destroy();
  });

  it('a request with a body hands the connection to node: GET, POST, GET on one connection all answered', async () => {
    const lean = await openLean();
    lean.tls.write(get('/echo-header/x-a', 'X-A: before\r\n'));
    expect(bodyOf(await lean.read(answers(1)))).toBe('before');
    lean.tls.write(`POST /upload HTTP/1.1\r\nHost: origin.test:${port}\r\nContent-Length: 11\r\n\r\nhello world`);
    const posted = await lean.read(answers(1));
    expect(bodyOf(posted)).toBe('11');
    expect(posted).toContain('\r\nConnection: keep-alive\r\n');
    lean.tls.write(get('/echo-header/x-a', 'X-A: after\r\n'));
    expect(bodyOf(await lean.read(answers(1)))).toBe('after');
    lean.tls.destroy();
  });

  it('smuggling after a lean request is refused by node: 400 bad_request with the smuggling signal', async () => {
    const lean = await openLean();
    lean.tls.write(get('/echo-header/x-a', 'X-A: ok\r\n'));
    await lean.read(answers(1));
    lean.tls.write(`GET / HTTP/1.1\r\nHost: origin.test:${port}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`);
    const text = await lean.read((t) => t.includes('\r\n\r\n'));
    expect(text).toMatch(/^HTTP\/1\.1 400/);
    expect(headerOf(text, 'x-microagent-reason')).toBe('bad_request');
    lean.tls.destroy();
  });

  it('an oversized head inside TLS gets 431 limit_exceeded', async () => {
    const lean = await openLean();
    lean.tls.write(get('/', `X-Big: ${'a'.repeat(40 * 1024)}\r\n`));
    const text = await lean.read((t) => t.includes('\r\n\r\n'));
    expect(text).toMatch(/^HTTP\/1\.1 431/);
    expect(headerOf(text, 'x-microagent-reason')).toBe('limit_exceeded');
    lean.tls.destroy();
  });

  it('an absolute URL naming another host is refused (identity_mismatch), and the connection serves on', async () => {
    const lean = await openLean();
    lean.tls.write(`GET https://other.origin.test:${port}/x HTTP/1.1\r\nHost: other.origin.test:${port}\r\n\r\n`);
    const denied = await lean.read(answers(1));
    expect(denied).toMatch(/^HTTP\/1\.1 403/);
    expect(headerOf(denied, 'x-microagent-reason')).toBe('identity_mismatch');
    lean.tls.write(`GET /echo-header/x-a HTTP/1.1\r\nHost: other.origin.test:${port}\r\nX-A: no\r\n\r\n`);
    const host = await lean.read(answers(1));
    expect(headerOf(host, 'x-microagent-reason')).toBe('identity_mismatch');
    lean.tls.write(get('/echo-header/x-a', 'X-A: same\r\n'));
    expect(bodyOf(await lean.read(answers(1)))).toBe('same');
    lean.tls.destroy();
    const records = await tp.records((rs) => decisions(rs).filter((d) => d.reason === 'identity_mismatch' && d.decrypted).length >= 2);
    expect(decisions(records).filter((d) => d.reason === 'identity_mismatch' && d.decrypted && d.signals.includes('identity_mismatch')).length).toBeGreaterThanOrEqual(2);
  });

  it('a request rule denies on the lean path: 403 with its reason and rule, and the connection serves on', async () => {
    const lean = await openLean();
    lean.tls.write(get('/blocked/x?token=1'));
    const denied = await lean.read(answers(1));
    expect(denied).toMatch(/^HTTP\/1\.1 403/);
    expect(headerOf(denied, 'x-microagent-reason')).toBe('rule_deny');
    expect(headerOf(denied, 'connection')).toBe('keep-alive');
    expect(bodyOf(denied)).toContain('by rule "no-blocked"');
    lean.tls.write(get('/echo-header/x-a', 'X-A: still\r\n'));
    expect(bodyOf(await lean.read(answers(1)))).toBe('still');
    lean.tls.destroy();
    const records = await tp.records((rs) => decisions(rs).some((d) => d.rule === 'no-blocked'));
    expect(decisions(records).find((d) => d.rule === 'no-blocked')).toMatchObject({ verdict: 'deny', method: 'GET', path: '/blocked/x', status: 403, decrypted: true });
  });

  it('an origin that refuses the connection: 502 with its reason on the lean path, the connection stays usable', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const lean = await openLean(tp, deadPort);
    const ask = `GET /x HTTP/1.1\r\nHost: origin.test:${deadPort}\r\n\r\n`;
    lean.tls.write(ask);
    const first = await lean.read(answers(1));
    expect(first).toMatch(/^HTTP\/1\.1 502/);
    expect(['upstream_unreachable', 'target_unreachable']).toContain(headerOf(first, 'x-microagent-reason'));
    lean.tls.write(ask);
    expect(await lean.read(answers(1))).toMatch(/^HTTP\/1\.1 502/);
    lean.tls.destroy();
  });

  it('Connection: close is honoured: the answer says so and the connection ends', async () => {
    const lean = await openLean();
    lean.tls.write(get('/echo-header/x-a', 'X-A: last\r\nConnection: close\r\n'));
    const text = await lean.read(answers(1));
    expect(headerOf(text, 'connection')).toBe('close');
    await lean.closed;
  });

  it('undici keep-alive through the lean path and back to node for a POST', async () => {
    const dispatcher = new ProxyAgent({ uri: tp.url, requestTls: { ca: tp.caPem } });
    try {
      const url = `https://origin.test:${port}`;
      for (const path of ['/echo-header/accept', '/bytes/100000']) {
        const res = await request(`${url}${path}`, { dispatcher, headers: { accept: 'text/plain' } });
        expect(res.statusCode).toBe(200);
        const body = Buffer.from(await res.body.arrayBuffer());
        expect(body.length).toBe(path === '/bytes/100000' ? 100000 : 'text/plain'.length);
      }
      const posted = await request(`${url}/upload`, { dispatcher, method: 'POST', body: 'x'.repeat(1000) });
      expect(await posted.body.text()).toBe('1000');
    } finally {
      await dispatcher.close();
    }
  });
});

describe('inject, echo scan and DoH on the lean path (curl --http1.1, separate proxy)', () => {
  const SECRET = 'lean-secret-value-123';
  const INJECT = `version: 1
mode: guarded
rules:
  - id: api-key
    action: inject
    hosts: [api.origin.test]
    headers:
      X-Api-Key: "\${secret:API_KEY}"
  - id: loopback
    action: allow
    cidrs: [127.0.0.1/32]
`;
  let ip: TestProxy;
  beforeAll(async () => {
    ip = await startTestProxy(INJECT, { resolver: testResolver({ '*.origin.test': ['127.0.0.1'] }), originCa: ca, secrets: (name) => (name === 'API_KEY' ? SECRET : undefined) });
  });
  afterAll(async () => ip?.close());
  const viaLean = (url: string, ...extra: string[]) => curl(['--http1.1', '-x', ip.url, '--cacert', ip.caPath, ...extra, url]);

  it('adds the secret upstream, withholds an echo (502 secret_echo), never records the value', async () => {
    const present = await viaLean(`https://api.origin.test:${port}/header-present/x-api-key`);
    expect(present.status).toBe(200);
    expect(present.body).toBe('present');
    expect(present.headers).toContain('\r\nconnection: keep-alive\r\n');
    const echoed = await viaLean(`https://api.origin.test:${port}/echo-header/x-api-key`);
    expect(echoed.status).toBe(502);
    expect(headerOf(echoed.headers, 'x-microagent-reason')).toBe('secret_echo');
    expect(echoed.body).not.toContain(SECRET);
    const records = await ip.records((rs) => decisions(rs).some((d) => d.reason === 'secret_echo'));
    expect(decisions(records).some((d) => d.host === 'api.origin.test' && d.secret_names?.includes('API_KEY'))).toBe(true);
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(ip.auditPath, 'utf8')).not.toContain(SECRET);
  });

  it('denies DNS-over-HTTPS (doh_denied) when no rule names the host', async () => {
    const r = await viaLean(`https://dns.origin.test:${port}/dns-query?dns=AAABAAAB`, '-H', 'accept: application/dns-message');
    expect(r.status).toBe(403);
    expect(headerOf(r.headers, 'x-microagent-reason')).toBe('doh_denied');
    const records = await ip.records((rs) => decisions(rs).some((d) => d.reason === 'doh_denied'));
    expect(decisions(records).find((d) => d.reason === 'doh_denied')).toMatchObject({ path: '/dns-query', decrypted: true });
  });
});

describe('lean path limits (separate proxy)', () => {
  it('a request head dripped slower than the headers timeout gets 408 and a slow_client record', async () => {
    const slow = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 } });
    try {
      const lean = await openLean(slow);
      lean.tls.write(`GET / HTTP/1.1\r\nHost: origin.test:${port}\r\n`);
      const drip = setInterval(() => lean.tls.writable && lean.tls.write('X-Drip: 1\r\n'), 100);
      const text = await lean.read((t) => t.includes('\r\n\r\n')).finally(() => clearInterval(drip));
      expect(text).toMatch(/^HTTP\/1\.1 408/);
      await lean.closed;
      const records = await slow.records((rs) => decisions(rs).some((d) => d.signals.includes('slow_client')));
      expect(decisions(records).find((d) => d.signals.includes('slow_client'))).toMatchObject({ verdict: 'deny', reason: 'limit_exceeded', status: 408 });
    } finally {
      await slow.close();
    }
  });
});
