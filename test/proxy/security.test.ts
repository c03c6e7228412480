// The security battery: every case asserts the verdict the guest sees AND the audit record.
// Internal addresses in every notation, names resolving inward, rebinding, identity mismatches,
// suffix confusion, smuggling, oversized headers, slow clients and a dead audit log.
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/index.js';
import { connectTunnel, curl, decisions, headerOf, listen, makeOriginCa, rawExchange, startHttpOrigin, startHttpsOrigin, startTestProxy, testResolver, type OriginCa, type TestProxy } from './helpers.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: block-metadata
    action: deny
    cidrs: [169.254.169.254]
  - id: origins
    action: allow
    hosts: [origin.test, www.origin.test]
`;
const STRICT = `version: 1
mode: strict
rules:
  - id: github
    action: allow
    hosts: [github.com]
`;

let ca: OriginCa;
let tp: TestProxy;
let https: number;
let http: number;
let httpRequests = 0;
let rebindCalls = 0;
const resolver = testResolver({
  'origin.test': ['127.0.0.1'],
  'www.origin.test': ['127.0.0.1'],
  'internal.test': ['10.0.0.7'],
  'github.com': ['127.0.0.1'],
  'github.com.evil.test': ['127.0.0.1'],
  'evilgithub.com': ['127.0.0.1'],
  // First answer public (an allowed address here), every later one private.
  'rebind.origin.test': () => (rebindCalls++ === 0 ? ['127.0.0.1'] : ['10.1.2.3']),
});

beforeAll(async () => {
  ca = makeOriginCa();
  https = (await startHttpsOrigin(ca)).port;
  const plain = await startHttpOrigin();
  http = plain.port;
  plain.server.on('request', () => httpRequests++);
  tp = await startTestProxy(POLICY, { resolver, originCa: ca });
});
afterAll(async () => tp?.close());

const lastDecision = async (pred: (d: ReturnType<typeof decisions>[number]) => boolean) => {
  const found = decisions(await tp.records((rs) => decisions(rs).some(pred))).filter(pred);
  return found[found.length - 1];
};

describe('internal addresses in every notation', () => {
  it.each([
    ['127.1', 'invalid_target'],
    ['0x7f.0.0.1', 'invalid_target'],
    ['017700000001', 'invalid_target'],
    ['2130706433', 'invalid_target'],
    ['0177.0.0.1', 'invalid_target'],
    ['127.0.0.1', 'internal_address'],
    ['[::ffff:127.0.0.1]', 'internal_address'],
    ['[::1]', 'internal_address'],
    ['0.0.0.0', 'internal_address'],
    ['10.0.0.1', 'internal_address'],
    ['192.168.1.1', 'internal_address'],
    ['100.64.0.1', 'internal_address'],
    ['[fd00::1]', 'internal_address'],
    ['169.254.169.254', 'rule_deny'],
  ])('CONNECT %s:443 -> 403 %s', async (host, reason) => {
    const lookupsBefore = resolver.lookups.length;
    const { status, head, socket } = await connectTunnel(tp.port, `${host}:443`);
    socket.destroy();
    expect(status).toBe(403);
    expect(headerOf(head, 'x-microagent-reason')).toBe(reason);
    expect(resolver.lookups.length).toBe(lookupsBefore);
    const d = await lastDecision((x) => x.reason === reason && x.protocol === 'https' && (reason === 'invalid_target' ? x.host === null : true));
    expect(d).toMatchObject({ verdict: 'deny', reason, status: 403 });
  });

  it.each([
    ['127.1', 'invalid_target'],
    ['[::1]', 'internal_address'],
    ['169.254.169.254', 'rule_deny'],
  ])('plain GET http://%s/ -> 403 %s', async (host, reason) => {
    const text = await rawExchange(tp.port, `GET http://${host}/latest/meta-data/ HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    expect(text.startsWith('HTTP/1.1 403')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe(reason);
    if (reason === 'rule_deny') expect(text).toContain('microagent: denied by rule "block-metadata" (rule_deny) for 169.254.169.254:80');
    expect(await lastDecision((x) => x.protocol === 'http' && x.reason === reason)).toMatchObject({ verdict: 'deny' });
  });

  it('an IPv4 deny holds for the address spelled as IPv4-mapped IPv6 under an IPv6 allow: the origin is never reached', async () => {
    tp.setPolicy(`version: 1\nmode: guarded\nrules:\n  - id: no-loopback\n    action: deny\n    cidrs: [127.0.0.0/8]\n  - id: any-v6\n    action: allow\n    cidrs: ["::/0"]\n`);
    try {
      const before = httpRequests;
      for (const host of ['[::ffff:127.0.0.1]', '[::ffff:7f00:1]']) {
        const text = await rawExchange(tp.port, `GET http://${host}:${http}/mapped HTTP/1.1\r\nHost: ${host}:${http}\r\nConnection: close\r\n\r\n`);
        expect(text.startsWith('HTTP/1.1 403')).toBe(true);
        expect(headerOf(text, 'x-microagent-reason')).toBe('rule_deny');
      }
      expect(httpRequests).toBe(before);
      expect(await lastDecision((x) => x.rule === 'no-loopback')).toMatchObject({ verdict: 'deny', reason: 'rule_deny', host: '::ffff:127.0.0.1', status: 403 });
    } finally {
      tp.setPolicy(POLICY);
    }
  });

  it('a name resolving to an internal address is denied, and the record names the address', async () => {
    const r = await curl(['-x', tp.url, '--cacert', tp.caPath, 'https://internal.test/']);
    expect(r.status).toBe(403);
    expect(await lastDecision((x) => x.host === 'internal.test')).toMatchObject({ verdict: 'deny', reason: 'internal_address', ip: '10.0.0.7' });
  });
});

describe('rebinding', () => {
  it('one lookup per connection; the checked address is dialled; a later private answer is denied', async () => {
    tp.setPolicy(`${POLICY}  - id: pretend-public\n    action: allow\n    cidrs: [127.0.0.1/32]\n`);
    try {
      const first = await curl(['-x', tp.url, '--cacert', tp.caPath, `https://rebind.origin.test:${https}/echo`, `https://rebind.origin.test:${https}/echo?again`]);
      expect(first.status).toBe(200);
      expect(resolver.lookups.filter((h) => h === 'rebind.origin.test').length).toBe(1);
      expect(await lastDecision((x) => x.host === 'rebind.origin.test' && x.path === '/echo')).toMatchObject({ verdict: 'allow', ip: '127.0.0.1' });
      const second = await curl(['-x', tp.url, '--cacert', tp.caPath, `https://rebind.origin.test:${https}/echo`]);
      expect(second.status).toBe(403);
      expect(second.headers).toMatch(/X-Microagent-Reason: internal_address/);
      expect(await lastDecision((x) => x.host === 'rebind.origin.test' && x.verdict === 'deny')).toMatchObject({ ip: '10.1.2.3', reason: 'internal_address' });
    } finally {
      tp.setPolicy(POLICY);
    }
  });
});

describe('one identity per connection', () => {
  it('CONNECT authority vs its Host header', async () => {
    const { status, head, socket } = await connectTunnel(tp.port, `origin.test:${https}`, 'evil.test:443');
    socket.destroy();
    expect(status).toBe(403);
    expect(headerOf(head, 'x-microagent-reason')).toBe('identity_mismatch');
    expect(await lastDecision((x) => x.reason === 'identity_mismatch' && x.host === 'origin.test')).toMatchObject({ signals: ['identity_mismatch'] });
  });

  it('CONNECT authority vs SNI: the handshake is refused and nothing is minted for the other name', async () => {
    const { socket, status } = await connectTunnel(tp.port, `origin.test:${https}`);
    expect(status).toBe(200);
    const result = await new Promise<string>((resolve) => {
      const tls = tlsConnect({ socket, servername: 'www.origin.test', ca: tp.caPem });
      tls.on('secureConnect', () => resolve('handshake completed'));
      tls.on('error', (e) => resolve(`error: ${e.message}`));
      tls.on('close', () => resolve('closed'));
    });
    expect(result).not.toBe('handshake completed');
    expect(await lastDecision((x) => x.reason === 'identity_mismatch' && x.sni === 'www.origin.test')).toMatchObject({ verdict: 'deny', host: 'origin.test' });
  });

  it.each([['--http1.1'], ['--http2']])('CONNECT authority vs Host/:authority inside TLS (%s)', async (version) => {
    const r = await curl(['-x', tp.url, '--cacert', tp.caPath, version, '-H', `Host: www.origin.test:${https}`, `https://origin.test:${https}/echo`]);
    expect(r.status).toBe(403);
    expect(r.headers).toMatch(/x-microagent-reason: identity_mismatch/i);
    expect(await lastDecision((x) => x.reason === 'identity_mismatch' && x.decrypted)).toMatchObject({ verdict: 'deny', host: 'origin.test' });
  });

  it('plain request: absolute URL vs Host header', async () => {
    const text = await rawExchange(tp.port, `GET http://origin.test:${http}/echo HTTP/1.1\r\nHost: www.origin.test:${http}\r\nConnection: close\r\n\r\n`);
    expect(text.startsWith('HTTP/1.1 403')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe('identity_mismatch');
  });
});

describe('name confusion (strict policy allowing only github.com)', () => {
  beforeAll(() => tp.setPolicy(STRICT));
  afterAll(() => tp.setPolicy(POLICY));
  it.each([['github.com.evil.test'], ['evilgithub.com'], ['github.co'], ['xn--github-.com']])('%s is denied before any lookup', async (host) => {
    const before = resolver.lookups.length;
    const { status, head, socket } = await connectTunnel(tp.port, `${host}:443`);
    socket.destroy();
    expect(status).toBe(403);
    expect(['default_deny', 'invalid_target']).toContain(headerOf(head, 'x-microagent-reason'));
    expect(resolver.lookups.length).toBe(before);
  });
  it.each([['GitHub.COM'], ['github.com.'], ['GITHUB.COM.']])('%s normalises to the allowed github.com', async (host) => {
    const { status, socket } = await connectTunnel(tp.port, `${host}:${https}`);
    socket.destroy();
    expect(status).toBe(200);
    expect(await lastDecision((x) => x.host === 'github.com' && x.verdict === 'allow')).toMatchObject({ rule: 'github' });
  });
});

describe('paths servers read differently (encoded slashes, empty segments, ";" parameters): judged in every reading', () => {
  const PATHS = `version: 1
mode: strict
rules:
  - id: no-admin
    action: deny
    hosts: [origin.test]
    paths: ["/admin/**"]
  - id: repos
    action: allow
    hosts: [origin.test]
    methods: [GET]
    paths: ["/repos/**"]
  - id: registry
    action: allow
    hosts: [www.origin.test]
`;
  beforeAll(() => tp.setPolicy(PATHS));
  afterAll(() => tp.setPolicy(POLICY));
  const get = (host: string, path: string) => rawExchange(tp.port, `GET http://${host}:${http}${path} HTTP/1.1\r\nHost: ${host}:${http}\r\nConnection: close\r\n\r\n`);

  it.each([
    ['www.origin.test', '/@types%2fnode', 'registry'], // an npm scoped package: a host rule without paths
    ['origin.test', '/repos/a%2Fb', 'repos'], // allowed in both readings
  ])('%s%s is allowed by %s and reaches the origin byte for byte', async (host, path, rule) => {
    const text = await get(host, path);
    expect(text.startsWith('HTTP/1.1 200')).toBe(true);
    expect(text).toContain(`"url":"${path}"`); // the origin's echo of the request line
    expect(await lastDecision((x) => x.path === path)).toMatchObject({ verdict: 'allow', rule });
  });

  it.each([
    ['/repos%2f..%2fadmin', 'no-admin', 'rule_deny'], // "/admin" to a server that decodes it
    ['/admin%2Fusers', 'no-admin', 'rule_deny'],
    ['/repos%5c..%5cadmin', 'no-admin', 'rule_deny'],
    ['/repos//../admin/x', 'no-admin', 'rule_deny'], // "/admin/x" to a server that merges slashes (nginx)
    ['/repos/..;/admin/x', 'no-admin', 'rule_deny'], // "/admin/x" to a server that drops parameters (Tomcat)
    ['/repos/..;/other', null, 'internal_address'], // allowed as written, "/other" with the parameter dropped (origin.test is 127.0.0.1)
  ])('origin.test%s -> 403 %s (%s), audited with the path as sent', async (path, rule, reason) => {
    const text = await get('origin.test', path);
    expect(text.startsWith('HTTP/1.1 403')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe(reason);
    expect(await lastDecision((x) => x.path === path)).toMatchObject({ verdict: 'deny', rule, reason });
  });
});

describe('requests refused before any destination is decided', () => {
  it.each([
    ['an origin-form request', 'GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n', 'an origin-form request'],
    ['an HTTP/1.1 request without Host', 'GET http://origin.test/x HTTP/1.1\r\nConnection: close\r\n\r\n', 'without a Host header'],
  ])('%s -> 400 bad_request, recorded', async (_, request, body) => {
    const before = (await tp.records()).length;
    const text = await rawExchange(tp.port, request);
    expect(text.startsWith('HTTP/1.1 400')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe('bad_request');
    expect(text).toContain(body);
    const added = decisions((await tp.records((rs) => rs.length > before)).slice(before));
    expect(added).toMatchObject([{ verdict: 'deny', reason: 'bad_request', status: 400, host: null, method: 'GET' }]);
  });
});

describe('framing and limits', () => {
  const smugglingRecorded = async () => lastDecision((x) => x.reason === 'bad_request' && x.signals.includes('smuggling'));

  it('Content-Length with Transfer-Encoding (plain) -> 400 bad_request, smuggling', async () => {
    const text = await rawExchange(tp.port, `POST http://origin.test:${http}/upload HTTP/1.1\r\nHost: origin.test:${http}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n`);
    expect(text.startsWith('HTTP/1.1 400')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe('bad_request');
    expect(await smugglingRecorded()).toBeDefined();
  });

  it('duplicate, different Content-Length (plain) -> 400', async () => {
    const text = await rawExchange(tp.port, `POST http://origin.test:${http}/upload HTTP/1.1\r\nHost: origin.test:${http}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`);
    expect(text.startsWith('HTTP/1.1 400')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe('bad_request');
  });

  it('Content-Length with Transfer-Encoding inside intercepted TLS -> 400', async () => {
    const { socket } = await connectTunnel(tp.port, `origin.test:${https}`);
    const answer = await new Promise<string>((resolve) => {
      const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['http/1.1'] }, () => {
        tls.write(`POST /upload HTTP/1.1\r\nHost: origin.test:${https}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
      });
      let text = '';
      tls.on('data', (c: Buffer) => (text += c.toString()));
      tls.on('close', () => resolve(text));
      tls.on('error', () => resolve(text));
    });
    expect(answer.startsWith('HTTP/1.1 400')).toBe(true);
    expect(headerOf(answer, 'x-microagent-reason')).toBe('bad_request');
  });

  it('oversized request headers -> 431 limit_exceeded', async () => {
    const text = await rawExchange(tp.port, `GET http://origin.test:${http}/ HTTP/1.1\r\nHost: origin.test:${http}\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(text.startsWith('HTTP/1.1 431')).toBe(true);
    expect(headerOf(text, 'x-microagent-reason')).toBe('limit_exceeded');
    expect(await lastDecision((x) => x.reason === 'limit_exceeded' && x.status === 431)).toBeDefined();
  });

  it('oversized request headers over HTTP/2 -> 431 limit_exceeded too (the HTTP/2 parser does not hold to the limit)', async () => {
    const r = await curl(['-x', tp.url, '--cacert', tp.caPath, '--http2', '-H', `Cookie: k=${'a'.repeat(40_000)}`, `https://origin.test:${https}/big-cookie-h2`]);
    expect(r.status).toBe(431);
    expect(r.headers).toMatch(/x-microagent-reason: limit_exceeded/i);
    expect(await lastDecision((x) => x.path === '/big-cookie-h2')).toMatchObject({ verdict: 'deny', reason: 'limit_exceeded', status: 431, decrypted: true, host: 'origin.test' });
  });

  it('oversized request headers inside an intercepted tunnel -> 431, recorded against the tunnel', async () => {
    const r = await curl(['-x', tp.url, '--cacert', tp.caPath, '--http1.1', '-H', `Cookie: k=${'a'.repeat(40_000)}`, `https://origin.test:${https}/big-cookie`]);
    expect(r.status).toBe(431);
    const connect = await lastDecision((x) => x.protocol === 'https' && x.port === https && x.path === undefined && x.verdict === 'allow');
    const refused = await lastDecision((x) => x.status === 431 && x.protocol === 'https');
    expect(refused).toMatchObject({ verdict: 'deny', reason: 'limit_exceeded', conn: connect?.conn, host: 'origin.test', port: https, decrypted: true, sni: 'origin.test' });
  });
});

describe('slow clients and a dead audit log (separate proxies)', () => {
  it('slowloris request heads are cut by the headers timeout', async () => {
    const slow = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 } });
    try {
      const { connect } = await import('node:net');
      const text = await new Promise<string>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: slow.port });
        let got = '';
        socket.on('connect', () => socket.write(`GET http://origin.test:${http}/ HTTP/1.1\r\nHost: origin.test:${http}\r\n`));
        const drip = setInterval(() => socket.writable && socket.write('X-Drip: 1\r\n'), 100);
        socket.on('data', (c: Buffer) => (got += c.toString()));
        socket.on('close', () => {
          clearInterval(drip);
          resolve(got);
        });
        socket.on('error', () => undefined);
      });
      expect(text === '' || text.startsWith('HTTP/1.1 408')).toBe(true);
      const records = await slow.records((rs) => decisions(rs).some((d) => d.signals.includes('slow_client')));
      expect(decisions(records).find((d) => d.signals.includes('slow_client'))).toMatchObject({ verdict: 'deny', reason: 'limit_exceeded' });
    } finally {
      await slow.close();
    }
  });

  it('a tunnel that never sends its ClientHello is closed', async () => {
    const slow = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { headersTimeoutMs: 300 } });
    try {
      const { socket, status } = await connectTunnel(slow.port, `origin.test:${https}`);
      expect(status).toBe(200);
      await new Promise((resolve) => socket.on('close', resolve));
      const records = await slow.records((rs) => rs.some((r: AuditRecord) => r.event === 'egress.close' && r.signals?.includes('slow_client') === true));
      expect(records.find((r) => r.event === 'egress.close' && r.signals?.includes('slow_client'))).toMatchObject({ reason: 'limit_exceeded' });
    } finally {
      await slow.close();
    }
  });

  it('tunnel count and request body size limits answer limit_exceeded, audited', async () => {
    const small = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { maxTunnels: 1, maxRequestBodyBytes: 1000 } });
    try {
      const first = await connectTunnel(small.port, `origin.test:${https}`);
      expect(first.status).toBe(200);
      const second = await connectTunnel(small.port, `origin.test:${https}`);
      second.socket.destroy();
      expect(second.status).toBe(429);
      expect(headerOf(second.head, 'x-microagent-reason')).toBe('limit_exceeded');
      first.socket.destroy();
      await small.records((rs) => rs.some((r: AuditRecord) => r.event === 'egress.close'));
      const upload = await curl(['-x', small.url, '--cacert', small.caPath, '--http1.1', '--data-binary', 'x'.repeat(5000), `https://origin.test:${https}/upload`]);
      expect(upload.status).toBe(413);
      expect(upload.headers).toMatch(/x-microagent-reason: limit_exceeded/i);
      const records = await small.records((rs) => rs.filter((r: AuditRecord) => r.event === 'egress.close').length >= 3);
      expect(decisions(records).filter((d) => d.reason === 'limit_exceeded').length).toBeGreaterThanOrEqual(2);
      // The refused upload is one denial: its aborted upstream is not refused again as a 502.
      expect(decisions(records).filter((d) => d.path === '/upload').map((d) => [d.verdict, d.status ?? null])).toEqual([
        ['allow', null],
        ['deny', 413],
      ]);
    } finally {
      await small.close();
    }
  });

  it('a connection past maxConnections is closed by node and still audited as limit_exceeded', async () => {
    const small = await startTestProxy(POLICY, { resolver, originCa: ca, limits: { maxConnections: 1 } });
    try {
      const first = await connectTunnel(small.port, `origin.test:${https}`);
      expect(first.status).toBe(200);
      const closed = await new Promise<boolean>((resolve) => {
        const extra = netConnect({ host: '127.0.0.1', port: small.port });
        extra.on('error', () => undefined);
        extra.on('close', () => resolve(true));
      });
      expect(closed).toBe(true);
      first.socket.destroy();
      const records = await small.records((rs) => decisions(rs).some((d) => d.reason === 'limit_exceeded'));
      expect(decisions(records).find((d) => d.reason === 'limit_exceeded')).toMatchObject({ verdict: 'deny', host: null, port: 0 });
    } finally {
      await small.close();
    }
  });

  it('audit log down: 503 audit_unavailable and nothing is dialled', async () => {
    let dialled = 0;
    const target = createNetServer((s) => {
      dialled++;
      s.destroy();
    });
    const port = await listen(target as never);
    const dead = await startTestProxy(`${POLICY}  - id: loop\n    action: allow\n    cidrs: [127.0.0.1/32]\n`, {
      resolver,
      audit: (real) => ({ append: () => Promise.reject(new Error('disk gone')), healthy: false, close: () => real.close() }),
    });
    try {
      const { status, head, socket } = await connectTunnel(dead.port, `127.0.0.1:${port}`);
      socket.destroy();
      expect(status).toBe(503);
      expect(headerOf(head, 'x-microagent-reason')).toBe('audit_unavailable');
      const plain = await rawExchange(dead.port, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
      expect(plain.startsWith('HTTP/1.1 503')).toBe(true);
      expect(dialled).toBe(0);
    } finally {
      await dead.close();
      target.close();
    }
  });
});
