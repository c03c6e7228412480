// The lean request-head parser (sans-IO) and the lean response head: what it accepts, everything it
// leaves to node's parser (smuggling, oversize, malformed, bodies, upgrades), and split-invariance.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRequestHead } from '../../src/proxy/h1-request.js';
import { responseHead } from '../../src/proxy/h1-serve.js';

const MAX = 1024;
const parse = (text: string, max = MAX) => parseRequestHead(Buffer.from(text, 'latin1'), max);

describe('parseRequestHead: the lean subset', () => {
  it('parses a bodiless GET: target, lowercase unique headers, trimmed values, head length', () => {
    const text = 'GET /a?b=1 HTTP/1.1\r\nHost: origin.test\r\nAccept:  */* \r\nX-Tab:\tv\t\r\n\r\nNEXT';
    const parsed = parse(text);
    expect(parsed).toEqual({
      kind: 'head',
      head: { method: 'GET', target: '/a?b=1', headers: { host: 'origin.test', accept: '*/*', 'x-tab': 'v' }, headBytes: text.length - 4, keepAlive: true },
    });
  });

  it('HEAD, absolute-form targets and Connection: close', () => {
    const parsed = parse('HEAD https://origin.test/x HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n');
    expect(parsed.kind === 'head' && parsed.head).toMatchObject({ method: 'HEAD', target: 'https://origin.test/x', keepAlive: false });
  });

  it('a head with no header lines at all', () => {
    expect(parse('GET / HTTP/1.1\r\n\r\n')).toMatchObject({ kind: 'head', head: { headers: {}, headBytes: 18 } });
  });

  it('needs more until the blank line, and refuses to wait past the limit', () => {
    expect(parse('GET / HTTP/1.1\r\nHost: a\r\n')).toEqual({ kind: 'need-more' });
    expect(parse('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(MAX))).toEqual({ kind: 'not-lean', why: 'too_large' });
    expect(parse('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(MAX) + '\r\n\r\n')).toEqual({ kind: 'not-lean', why: 'too_large' });
  });
});

describe('parseRequestHead: everything else goes to node', () => {
  it.each([
    ['POST with a body', 'POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n', 'method'],
    ['GET with Content-Length', 'GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n', 'body'],
    ['GET with Transfer-Encoding', 'GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n', 'body'],
    ['Content-Length with Transfer-Encoding (smuggling)', 'GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 'body'],
    ['duplicate Content-Length', 'GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', 'body'],
    ['duplicate Host', 'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n', 'duplicate'],
    ['duplicate header differing in case', 'GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n', 'duplicate'],
    ['an inherited property name', 'GET / HTTP/1.1\r\n__proto__: 1\r\n\r\n', 'duplicate'],
    ['WebSocket upgrade', 'GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n', 'upgrade'],
    ['Upgrade header', 'GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n', 'upgrade'],
    ['h2c', 'GET / HTTP/1.1\r\nHTTP2-Settings: AAAA\r\n\r\n', 'upgrade'],
    ['Expect', 'GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n', 'expect'],
    ['HTTP/1.0', 'GET / HTTP/1.0\r\n\r\n', 'version'],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'method'],
    ['lowercase method', 'get / HTTP/1.1\r\n\r\n', 'method'],
    ['two spaces in the request line', 'GET  / HTTP/1.1\r\n\r\n', 'target'],
    ['a space inside the target', 'GET /a b HTTP/1.1\r\n\r\n', 'target'],
    ['a non-ASCII target', 'GET /\xe9 HTTP/1.1\r\n\r\n', 'target'],
    ['leading empty line', '\r\nGET / HTTP/1.1\r\n\r\n', 'method'],
    ['obs-fold', 'GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n', 'malformed'],
    ['space before the colon', 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', 'malformed'],
    ['no colon', 'GET / HTTP/1.1\r\nHost\r\n\r\n', 'malformed'],
    ['bare LF inside a field', 'GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n', 'malformed'],
    ['bare CR inside a field', 'GET / HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n', 'malformed'],
    ['bare LF line ends', 'GET / HTTP/1.1\nHost: a\n\r\n\r\n', 'version'],
    ['a NUL byte', 'GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n', 'malformed'],
    ['a DEL byte', 'GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n', 'malformed'],
  ])('%s', (_, text, why) => {
    expect(parse(text)).toEqual({ kind: 'not-lean', why });
  });
});

describe('parseRequestHead: properties', () => {
  const heads = fc
    .record({
      method: fc.constantFrom('GET', 'HEAD', 'POST', 'get'),
      path: fc.stringMatching(/^\/[!-~]{0,20}$/),
      headers: fc.uniqueArray(fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), fc.stringMatching(/^[ -~]{0,12}$/)), { maxLength: 6, selector: ([n]) => n }),
    })
    .map(({ method, path, headers }) => `${method} ${path} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`);

  it('every prefix of a head is need-more or the same verdict; the whole head never throws', () => {
    fc.assert(
      fc.property(heads, (text) => {
        const whole = parse(text, 4096);
        for (let cut = 0; cut < text.length; cut++) {
          const part = parse(text.slice(0, cut), 4096);
          if (part.kind !== 'need-more') expect(part).toEqual(whole);
        }
      }),
    );
  });

  it('random bytes give need-more, a head, or not-lean, never an exception', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 40 }), (a, b) => {
        const bytes = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\n'), Buffer.from(a), Buffer.from('\r\n\r\n'), Buffer.from(b)]);
        const parsed = parseRequestHead(bytes, 4096);
        expect(['need-more', 'head', 'not-lean']).toContain(parsed.kind);
        if (parsed.kind === 'head') for (const v of Object.values(parsed.head.headers)) expect(v).not.toMatch(/[\r\n\0]/);
      }),
    );
  });
});

describe('responseHead', () => {
  it('replaces the Content-Length with the bytes that follow, adds a Date when missing, keeps set-cookie lines apart', () => {
    const head = responseHead(200, { 'content-length': '99', 'set-cookie': ['a=1', 'b=2'] }, 5, true);
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ndate: [^\r\n]+ GMT\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n$/);
  });

  it('an answer without a body keeps the origin Content-Length; a streamed one of unknown length is chunked', () => {
    expect(responseHead(200, { 'content-length': '7', date: 'x' }, 'as-is', false)).toBe('HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: x\r\nconnection: close\r\n\r\n');
    expect(responseHead(404, { date: 'x' }, 'chunked', true)).toBe('HTTP/1.1 404 Not Found\r\ndate: x\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n');
  });
});
