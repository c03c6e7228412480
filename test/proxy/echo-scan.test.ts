// The echo scan on its own: every way a body can split an echo across chunks, what is forwarded
// before it (never any byte of the echo), and compressed bodies.
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { bodyEchoes, decodedForScan, headersEcho, pendingPrefix, secretNeedles, StreamScan, wholeAnswerVerdict } from '../../src/proxy/echo-scan.js';

const SECRET = 'sk-test-0123456789abcdef';
const needles = secretNeedles([SECRET]);
const BASE64 = Buffer.from(SECRET).toString('base64');

/** Feeds `chunks` through a fresh scan: what was forwarded, and whether it stopped on an echo. */
function stream(chunks: readonly string[]): { forwarded: string; echo: boolean } {
  const scan = new StreamScan(needles);
  let forwarded = '';
  for (const chunk of chunks) {
    const out = scan.push(Buffer.from(chunk));
    if (out === null) return { forwarded, echo: true };
    forwarded += out.toString();
  }
  return { forwarded: forwarded + scan.end().toString(), echo: false };
}

describe('StreamScan', () => {
  it('passes a clean body through whole, in order, at every chunking', () => {
    const body = 'data: {"delta":"hello"}\n\n'.repeat(20);
    for (let size = 1; size <= body.length; size += 7) {
      const chunks = body.match(new RegExp(`[\\s\\S]{1,${size}}`, 'g')) as string[];
      expect(stream(chunks)).toEqual({ forwarded: body, echo: false });
    }
  });

  it('forwards a chunk whole unless its end could begin the secret, and holds only that end', () => {
    const scan = new StreamScan(needles);
    expect(scan.push(Buffer.from('data: one\n\n'))?.toString()).toBe('data: one\n\n');
    expect(scan.push(Buffer.from('data: sk-te'))?.toString()).toBe('data: ');
    expect(scan.push(Buffer.from('a\n\n'))?.toString()).toBe('sk-tea\n\n');
    expect(scan.push(Buffer.from(`x ${BASE64.slice(0, 5)}`))?.toString()).toBe('x ');
    expect(scan.end().toString()).toBe(BASE64.slice(0, 5));
  });

  it('pendingPrefix: the longest end of the window that begins a needle, never a whole needle', () => {
    expect(pendingPrefix(Buffer.from('xyw'), needles)).toBe(0);
    expect(pendingPrefix(Buffer.from('abc'), needles)).toBe(1); // base64 of the secret begins with "c"
    expect(pendingPrefix(Buffer.from('xxs'), needles)).toBe(1);
    expect(pendingPrefix(Buffer.from('sk-sk-test'), needles)).toBe(7);
    expect(pendingPrefix(Buffer.from(SECRET.slice(0, -1)), needles)).toBe(SECRET.length - 1);
  });

  it.each([SECRET, BASE64])('stops on %s at every split point, having forwarded no byte of it', (echo) => {
    const body = `data: one\n\ndata: ${echo}\n\ndata: three\n\n`;
    const at = body.indexOf(echo);
    for (let cut = 1; cut < body.length; cut++) {
      const result = stream([body.slice(0, cut), body.slice(cut)]);
      expect(result.echo, `split at ${cut}`).toBe(true);
      expect(body.slice(0, at).startsWith(result.forwarded), `split at ${cut}`).toBe(true);
    }
    // One byte per chunk: the worst case for a held-back tail.
    const bytewise = stream([...body]);
    expect(bytewise.echo).toBe(true);
    expect(bytewise.forwarded.length).toBeLessThanOrEqual(at);
  });

  it('a prefix of the secret that is never completed is forwarded in the end', () => {
    const body = `data: ${SECRET.slice(0, -1)}!`;
    expect(stream([body.slice(0, 10), body.slice(10)])).toEqual({ forwarded: body, echo: false });
  });
});

describe('secretNeedles: the secret base64-encoded inside longer data', () => {
  const encode = (prefix: string, suffix: string, url: boolean) => Buffer.from(prefix + SECRET + suffix).toString(url ? 'base64url' : 'base64');

  it.each([
    ['', 'Q'],
    ['x', 'Q'],
    ['xy', ''],
    ['Bearer ', ''], // an origin echoing the whole Authorization value, base64-encoded
    ['{"token":"', '"}'],
  ])('finds it after %j (every alignment), in base64 and base64url', (prefix, suffix) => {
    for (const url of [false, true]) expect(bodyEchoes(Buffer.from(`x=${encode(prefix, suffix, url)}`), needles), `url ${url}`).toBe(true);
  });

  it('a secret whose encoding has "+" and "/" is found in base64url too', () => {
    const secret = '\xfb\xff\xbf-long-enough-secret';
    const found = secretNeedles([secret]);
    for (const k of [0, 1, 2]) {
      const data = Buffer.concat([Buffer.alloc(k, 0x41), Buffer.from(secret)]);
      expect(bodyEchoes(Buffer.from(data.toString('base64url')), found), `alignment ${k}`).toBe(true);
      expect(bodyEchoes(Buffer.from(data.toString('base64')), found), `alignment ${k}`).toBe(true);
    }
  });

  it('other base64 data is not taken for the secret', () => {
    const other = Buffer.from('sk-test-9876543210fedcba, an unrelated value of the same shape').toString('base64');
    expect(bodyEchoes(Buffer.from(other), needles)).toBe(false);
  });
});

describe('headersEcho', () => {
  it('finds the secret or its base64 in any header value', () => {
    expect(headersEcho({ 'x-echo': SECRET }, needles)).toBe(true);
    expect(headersEcho({ 'set-cookie': ['a=1', `b=${BASE64}`] }, needles)).toBe(true);
    expect(headersEcho({ 'content-type': 'text/plain' }, needles)).toBe(false);
  });

  it('finds a secret holding a quote or a backslash, which a JSON rendering of the headers would escape', () => {
    const odd = secretNeedles(['pa"ss\\word']);
    expect(headersEcho({ 'x-echo': 'user pa"ss\\word' }, odd)).toBe(true);
    expect(headersEcho({ raw: ['X-Echo', 'pa"ss\\word'] }, odd)).toBe(true);
  });
});

describe('wholeAnswerVerdict', () => {
  it('withholds an echo in the decoded body or in a header set, and a body it cannot decode', () => {
    const max = 1 << 20;
    expect(wholeAnswerVerdict(gzipSync(Buffer.from(`{"k":"${SECRET}"}`)), 'gzip', [], needles, max)).toBe('secret_echo');
    expect(wholeAnswerVerdict(Buffer.from('fine'), undefined, [{ 'grpc-message': SECRET }], needles, max)).toBe('secret_echo');
    expect(wholeAnswerVerdict(Buffer.from('fine'), 'zstd', [], needles, max)).toBe('unscannable_response');
    expect(wholeAnswerVerdict(Buffer.from('fine'), undefined, [{ 'content-type': 'text/plain' }], needles, max)).toBeNull();
  });
});

describe('decodedForScan', () => {
  const text = Buffer.from(`{"echo":"${SECRET}"}`);
  it.each([
    ['gzip', gzipSync(text)],
    ['x-gzip', gzipSync(text)],
    ['deflate', deflateSync(text)],
    ['br', brotliCompressSync(text)],
    ['identity', text],
    [undefined, text],
    ['gzip, br', brotliCompressSync(gzipSync(text))],
  ])('undoes content-encoding %s', (encoding, body) => {
    expect(decodedForScan(body, encoding, 1 << 20)?.toString()).toBe(text.toString());
  });

  it('gives up on an unknown coding, corrupt data and anything past the cap (a decompression bomb)', () => {
    expect(decodedForScan(text, 'zstd', 1 << 20)).toBeNull();
    expect(decodedForScan(Buffer.from('not gzip'), 'gzip', 1 << 20)).toBeNull();
    expect(decodedForScan(gzipSync(Buffer.alloc(1 << 20)), 'gzip', 1 << 16)).toBeNull();
  });
});
