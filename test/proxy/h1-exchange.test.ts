// The lean HTTP/1.1 upstream exchange: its pure framing (head, chunked decoder, request head) and the
// pooled driver against a real raw-socket origin (keep-alive reuse, interim answers, close-delimited
// bodies, a stale idle connection, framing the proxy must refuse).
import { createServer, connect, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/index.js';
import { checkAddresses, type CheckedTarget } from '../../src/proxy/checked-target.js';
import { LeanPool } from '../../src/proxy/h1-exchange.js';
import { chunkedStart, decodeChunked, parseResponseHead, requestHead } from '../../src/proxy/h1-response.js';

const MAX = 32 * 1024;

describe('response head', () => {
  it('frames by length, chunked, close and none', () => {
    const head = (text: string, method = 'GET') => {
      const parsed = parseResponseHead(Buffer.from(text), MAX, method);
      if (parsed.kind !== 'head') throw new Error(parsed.kind);
      return parsed.head;
    };
    expect(head('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello').framing).toEqual({ kind: 'length', bytes: 5 });
    expect(head('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n').framing).toEqual({ kind: 'chunked' });
    const close = head('HTTP/1.1 200 OK\r\n\r\n');
    expect(close.framing).toEqual({ kind: 'close' });
    expect(close.keepAlive).toBe(false);
    expect(head('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 'HEAD').framing).toEqual({ kind: 'none' });
    expect(head('HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n').framing).toEqual({ kind: 'none' });
    expect(head('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n').keepAlive).toBe(false);
    expect(head('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n').keepAlive).toBe(false);
    const h = head('HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-A: 1\r\nx-a:  2 \r\nContent-Length: 0\r\n\r\n');
    expect(h.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(h.headers['x-a']).toBe('1, 2');
  });

  it.each([
    ['length and chunked together', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['conflicting lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'],
    ['a non-numeric length', 'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n'],
    ['a bare LF inside the head', 'HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n'],
    ['a bare CR inside the head', 'HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 0\r\n\r\n'],
    ['a CR before a CRLF', 'HTTP/1.1 200 OK\r\nX-A: 1\r\r\nContent-Length: 0\r\n\r\n'],
    ['an LF right after a CRLF', 'HTTP/1.1 200 OK\r\n\nX-A: 1\r\nContent-Length: 0\r\n\r\n'],
    ['a bare LF ending the status line', 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n'],
    ['a CR ending the last line', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\r\n\r\n'],
    ['a length repeated with another value', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n'],
    ['a control byte in a value', 'HTTP/1.1 200 OK\r\nX-A: 1\u0000\r\nContent-Length: 0\r\n\r\n'],
    ['an unrequested protocol switch', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'],
    ['a malformed status line', 'HTTP/1.1 2000 OK\r\n\r\n'],
  ])('refuses %s', (_, text) => {
    expect(parseResponseHead(Buffer.from(text), MAX, 'GET').kind).toBe('invalid');
  });

  it('needs more until the blank line, and refuses a head past the limit', () => {
    expect(parseResponseHead(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n'), MAX, 'GET').kind).toBe('need-more');
    expect(parseResponseHead(Buffer.from(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(100)}\r\n`), 64, 'GET').kind).toBe('invalid');
  });
});

describe('chunked decoder', () => {
  const body = (text: string, splits: number[]) => {
    const input = Buffer.from(text);
    const state = chunkedStart();
    const out: Buffer[] = [];
    let done = false;
    let rest: Buffer | null = null;
    let from = 0;
    for (const at of [...splits.filter((s) => s > 0 && s < input.length).sort((a, b) => a - b), input.length]) {
      const step = decodeChunked(state, input.subarray(from, at), MAX);
      if (step.kind === 'invalid') return step.kind;
      out.push(...step.data);
      done ||= step.done;
      if (step.rest !== null) rest = step.rest;
      from = at;
    }
    return { text: Buffer.concat(out).toString(), done, trailers: state.trailers, rest: rest?.toString() ?? null };
  };
  const WIRE = '5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nGrpc-Status: 0\r\n\r\n';

  it('decodes data and trailers, and the same for any split of the input', () => {
    expect(body(WIRE, [])).toEqual({ text: 'hello, world', done: true, trailers: { 'grpc-status': '0' }, rest: null });
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: WIRE.length - 1 }), { maxLength: 6 }), (splits) => {
        expect(body(WIRE, splits)).toEqual(body(WIRE, []));
      }),
    );
  });

  it('reports bytes after the final chunk and refuses malformed sizes and missing CRLFs', () => {
    expect(body('0\r\n\r\nHTTP/1.1 200 OK', [])).toMatchObject({ done: true, rest: 'HTTP/1.1 200 OK' });
    expect(body('zz\r\nhello\r\n', [])).toBe('invalid');
    expect(body('5\r\nhelloXX0\r\n\r\n', [])).toBe('invalid');
  });
});

describe('request head', () => {
  it('writes Host first and refuses bytes node would refuse', () => {
    expect(requestHead('GET', '/a?b', 'x.test', { accept: '*/*', cookie: ['a=1', 'b=2'] })).toBe(
      'GET /a?b HTTP/1.1\r\nhost: x.test\r\naccept: */*\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n',
    );
    expect(requestHead('GET', '/', 'x.test', { 'x-a': 'v\r\nx-injected: 1' })).toBeNull();
    expect(requestHead('GET', '/a b', 'x.test', {})).toBeNull();
    expect(requestHead('GET', '/', 'x.test', { 'bad name': 'v' })).toBeNull();
  });
});

// A raw origin: answers each request with the next scripted reply for its connection order.
interface Origin {
  readonly port: number;
  readonly connections: Socket[];
  readonly requests: string[];
}
let server: Server | null = null;
let pool: LeanPool | null = null;
afterEach(() => {
  pool?.close();
  server?.close();
  server = null;
  pool = null;
});

async function origin(reply: (request: string, index: number, socket: Socket) => void): Promise<Origin> {
  const state: Origin = { port: 0, connections: [], requests: [] };
  server = createServer((socket) => {
    state.connections.push(socket);
    let buffered = '';
    socket.on('data', (d) => {
      buffered += d.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) >= 0) {
        const request = buffered.slice(0, end + 4);
        buffered = buffered.slice(end + 4);
        state.requests.push(request);
        reply(request, state.requests.length - 1, socket);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => (server as Server).listen(0, '127.0.0.1', resolve));
  return Object.assign(state, { port: (server.address() as { port: number }).port });
}

function targetFor(port: number): CheckedTarget {
  const policy = parsePolicy('version: 1\nmode: guarded\nrules:\n  - id: loop\n    action: allow\n    cidrs: [127.0.0.1/32]\n', 'lean.yaml');
  const check = checkAddresses(policy, 'http', { kind: 'name', host: 'origin.test', port }, ['127.0.0.1']);
  if (check.kind !== 'allowed') throw new Error('fixture');
  return check.target;
}

function leanPool(): LeanPool {
  pool = new LeanPool(
    (target) =>
      new Promise((resolve, reject) => {
        const socket = connect({ host: target.ip, port: target.port });
        socket.once('connect', () => resolve(socket));
        socket.once('error', reject);
      }),
    60_000,
  );
  return pool;
}

async function fetchOnce(p: LeanPool, target: CheckedTarget, method = 'GET') {
  const { answer } = p.exchange(target, false, requestHead(method, '/', 'origin.test', {}) as string, method, MAX);
  const got = await answer;
  const chunks: Buffer[] = [];
  for await (const chunk of got.body ?? [got.whole as Buffer]) chunks.push(chunk as Buffer);
  return { status: got.status, headers: got.headers, body: Buffer.concat(chunks).toString(), whole: got.whole?.toString() ?? null, trailers: got.trailers() };
}

describe('lean exchange over real sockets', () => {
  it('reuses one keep-alive connection, skips interim answers, decodes chunked bodies with trailers', async () => {
    const o = await origin((_, i, socket) => {
      if (i === 0) socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
      else if (i === 1) socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n');
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const p = leanPool();
    const target = targetFor(o.port);
    expect(await fetchOnce(p, target)).toMatchObject({ status: 200, body: 'hello', whole: 'hello' });
    expect(await fetchOnce(p, target)).toMatchObject({ status: 200, body: 'abc', whole: null, trailers: { 'x-sum': '1' } });
    expect(await fetchOnce(p, target, 'HEAD')).toMatchObject({ status: 200, body: '' });
    expect(o.connections).toHaveLength(1);
    expect(o.requests[2]).toMatch(/^HEAD \/ HTTP\/1\.1\r\nhost: origin\.test\r\n/);
  });

  it('streams a length-framed body that arrives after its head', async () => {
    const o = await origin((_, __, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst');
      setTimeout(() => socket.write('-last'), 20);
    });
    const p = leanPool();
    const target = targetFor(o.port);
    expect(await fetchOnce(p, target)).toMatchObject({ body: 'first-last', whole: null });
    expect(await fetchOnce(p, target)).toMatchObject({ body: 'first-last' });
    expect(o.connections).toHaveLength(1);
  });

  it('ends a close-delimited body at close and never reuses that connection', async () => {
    const o = await origin((_, __, socket) => socket.end('HTTP/1.1 200 OK\r\n\r\nuntil close'));
    const p = leanPool();
    const target = targetFor(o.port);
    expect(await fetchOnce(p, target)).toMatchObject({ body: 'until close' });
    expect(await fetchOnce(p, target)).toMatchObject({ body: 'until close' });
    expect(o.connections).toHaveLength(2);
  });

  it('fails a close-delimited body cut short by a reset', async () => {
    const o = await origin((_, __, socket) => {
      socket.write('HTTP/1.1 200 OK\r\n\r\npartial');
      setTimeout(() => socket.resetAndDestroy(), 20);
    });
    await expect(fetchOnce(leanPool(), targetFor(o.port))).rejects.toThrow(/ECONNRESET|reset/);
  });

  it('retries a GET once on a fresh connection when the idle one was closed under it', async () => {
    const o = await origin((_, i, socket) => {
      if (i === 1) socket.destroy();
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const p = leanPool();
    const target = targetFor(o.port);
    await fetchOnce(p, target);
    expect(await fetchOnce(p, target)).toMatchObject({ status: 200, body: 'ok' });
    expect(o.connections).toHaveLength(2);
  });

  it('fails, and drops the connection, on ambiguous framing or a body cut short', async () => {
    const o = await origin((_, i, socket) => {
      if (i === 0) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n');
      else socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort');
    });
    const p = leanPool();
    const target = targetFor(o.port);
    await expect(fetchOnce(p, target)).rejects.toThrow(/Content-Length and Transfer-Encoding/);
    await expect(fetchOnce(p, target)).rejects.toThrow(/before the response was complete/);
    expect(o.connections).toHaveLength(2);
  });

  it('a prewarmed connection serves the first exchange, whether its dial is still pending or done', async () => {
    const o = await origin((_, __, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const p = leanPool();
    const target = targetFor(o.port);
    p.prewarm(target, false);
    p.prewarm(target, false); // one dial per target at most
    expect(await fetchOnce(p, target)).toMatchObject({ status: 200, body: 'ok' }); // took the pending dial
    p.prewarm(target, false); // an idle connection is there: nothing dialled
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(o.connections).toHaveLength(1);
    const other = await origin((_, __, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const otherTarget = targetFor(other.port);
    p.prewarm(otherTarget, false);
    await until(() => other.connections.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 20)); // the dial has settled into the idle list
    expect(other.requests).toHaveLength(0); // dialled, but nothing sent before an exchange
    expect(await fetchOnce(p, otherTarget)).toMatchObject({ status: 200, body: 'ok' });
    expect(other.connections).toHaveLength(1);
  });

  it('a prewarm while an exchange is dialling the same target dials nothing more', async () => {
    const o = await origin((_, __, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const p = leanPool();
    const target = targetFor(o.port);
    const first = fetchOnce(p, target);
    p.prewarm(target, false);
    expect(await first).toMatchObject({ status: 200, body: 'ok' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(o.connections).toHaveLength(1);
  });

  it('a prewarm that fails leaves the next exchange its own dial; close ends a prewarm still dialling', async () => {
    const o = await origin((_, __, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    let failNext = true;
    const p = leanPool();
    const dialling = new LeanPool(async (target) => {
      if (failNext) {
        failNext = false;
        throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
      }
      return connect({ host: target.ip, port: target.port });
    }, 60_000);
    const target = targetFor(o.port);
    dialling.prewarm(target, false);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await fetchOnce(dialling, target)).toMatchObject({ status: 200, body: 'ok' });
    dialling.close();
    p.prewarm(target, false);
    p.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(o.connections.filter((c) => !c.destroyed && !c.readableEnded)).toHaveLength(0);
  });
});

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
}
