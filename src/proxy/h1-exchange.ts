/**
 * The lean HTTP/1.1 upstream exchange for bodiless requests: the request head goes out in one write on
 * an idle keep-alive connection to the checked target (or a fresh one the pool dialled and, for TLS,
 * verified, possibly ahead of the request: see prewarm), and the response, framed by h1-response.ts,
 * streams back as a Readable. It replaces node's
 * http.request + Agent on the hot path, which cost more CPU per request than the rest of the proxy.
 * Never writes to a connection the pool did not dial for this target; never reuses a connection whose
 * last response was not framed cleanly.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { assertCheckedTarget, type CheckedTarget } from './checked-target.js';
import { chunkedStart, decodeChunked, parseResponseHead, type ChunkedState, type ResponseHead } from './h1-response.js';

export interface LeanAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body as it streams in; null when `whole` already holds all of it. */
  readonly body: Readable | null;
  /** The complete body when it arrived with the head. */
  readonly whole: Buffer | null;
  /** Trailers of a chunked body once it ended (empty otherwise). */
  trailers(): Record<string, string | string[]> | null;
}

export interface LeanExchange {
  readonly answer: Promise<LeanAnswer>;
  abort(): void;
}

/** One upstream connection and the exchange it is serving (null while idle). */
interface Connection {
  readonly socket: Socket;
  readonly key: string;
  exchange: Exchange | null;
}

interface Exchange {
  onData(chunk: Buffer): void;
  onClose(err: Error | null): void;
}

type Dial = (target: CheckedTarget, tls: boolean) => Promise<Socket>;

const MAX_IDLE_PER_TARGET = 64;
const MAX_TARGETS = 1024;

function upstreamError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** Idle keep-alive connections per checked target. Owns every socket it holds; close() ends them all. */
export class LeanPool {
  private readonly idle = new Map<string, Connection[]>();
  private readonly open = new Set<Connection>();
  /** Connections dialled ahead of their first exchange (see prewarm), one per target at most. */
  private readonly warming = new Map<string, Promise<Connection>>();
  /** Dials in flight per target, for exchanges and prewarms alike. */
  private readonly dialling = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly dial: Dial,
    private readonly idleTimeoutMs: number,
  ) {}

  /** Sends `head` (a complete bodiless request) to `target` and frames the response. */
  exchange(target: CheckedTarget, tls: boolean, head: string, method: string, maxHeadBytes: number): LeanExchange {
    assertCheckedTarget(target);
    const key = `${tls ? 's' : 'p'}|${target.key}`;
    let aborted = false;
    let current: { abort(): void } | null = null;
    const attempt = (conn: Connection, reused: boolean): Promise<LeanAnswer> =>
      new Promise<LeanAnswer>((resolve, reject) => {
        const run = serve(conn, head, method, maxHeadBytes, () => this.release(conn), resolve, reject, reused);
        current = run;
        if (aborted) run.abort();
      });
    const fresh = (): Promise<LeanAnswer> => (this.takeWarming(key) ?? this.connect(target, tls, key)).then((conn) => attempt(conn, false));
    const reusable = this.takeIdle(key);
    const answer =
      reusable === null
        ? fresh()
        : attempt(reusable, true).catch((err: unknown) => {
            // The origin may close an idle connection just as we reuse it; a bodiless GET/HEAD is safe to send again.
            if ((err as { retry?: boolean }).retry === true && !aborted) return fresh();
            throw err;
          });
    return {
      answer,
      abort: () => {
        aborted = true;
        (current as { abort(): void } | null)?.abort();
      },
    };
  }

  /**
   * Dials `target` before its first exchange needs it, unless a connection to it is idle or being
   * dialled already (by an exchange or a prewarm); the next exchange takes it (a failed dial fails
   * that exchange, as its own dial would).
   */
  prewarm(target: CheckedTarget, tls: boolean): void {
    assertCheckedTarget(target);
    const key = `${tls ? 's' : 'p'}|${target.key}`;
    if (this.dialling.has(key) || (this.idle.get(key)?.length ?? 0) > 0) return;
    const dialling = this.connect(target, tls, key);
    this.warming.set(key, dialling);
    dialling.then(
      (conn) => {
        if (this.closed) conn.socket.destroy();
        else if (this.warming.get(key) === dialling) {
          this.warming.delete(key);
          this.release(conn);
        } // else an exchange took it
      },
      () => {
        if (this.warming.get(key) === dialling) this.warming.delete(key);
      },
    );
  }

  close(): void {
    this.closed = true;
    this.warming.clear();
    for (const conn of this.open) conn.socket.destroy();
    this.open.clear();
    this.idle.clear();
  }

  private async connect(target: CheckedTarget, tls: boolean, key: string): Promise<Connection> {
    this.dialling.set(key, (this.dialling.get(key) ?? 0) + 1);
    let socket: Socket;
    try {
      socket = await this.dial(target, tls);
    } finally {
      const left = (this.dialling.get(key) ?? 1) - 1;
      if (left === 0) this.dialling.delete(key);
      else this.dialling.set(key, left);
    }
    return this.track(socket, key);
  }

  /** Takes in a verified connection dialled elsewhere (an h2 attempt that found HTTP/1.1) as idle. */
  adopt(target: CheckedTarget, tls: boolean, socket: Socket): void {
    assertCheckedTarget(target);
    if (this.closed) socket.destroy();
    else this.release(this.track(socket, `${tls ? 's' : 'p'}|${target.key}`));
  }

  private track(socket: Socket, key: string): Connection {
    const conn: Connection = { socket, key, exchange: null };
    this.open.add(conn);
    socket.setTimeout(this.idleTimeoutMs);
    socket.on('timeout', () => {
      if (conn.exchange === null) socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      // Bytes on an idle connection answer nothing we asked: the connection is no longer trustworthy.
      if (conn.exchange === null) socket.destroy();
      else conn.exchange.onData(chunk);
    });
    let failure: Error | null = null;
    socket.on('error', (err: Error) => (failure = err));
    socket.on('close', () => {
      this.open.delete(conn);
      this.dropIdle(conn);
      conn.exchange?.onClose(failure);
      conn.exchange = null;
    });
    return conn;
  }

  private takeWarming(key: string): Promise<Connection> | undefined {
    const dialling = this.warming.get(key);
    this.warming.delete(key);
    return dialling;
  }

  private takeIdle(key: string): Connection | null {
    const list = this.idle.get(key);
    while (list !== undefined && list.length > 0) {
      const conn = list.pop() as Connection;
      if (!conn.socket.destroyed && conn.socket.writable) return conn;
    }
    return null;
  }

  private release(conn: Connection): void {
    let list = this.idle.get(conn.key);
    if (list === undefined) {
      if (this.idle.size >= MAX_TARGETS) {
        const [oldestKey, oldest] = this.idle.entries().next().value as [string, Connection[]];
        this.idle.delete(oldestKey);
        for (const stale of oldest) stale.socket.destroy();
      }
      list = [];
      this.idle.set(conn.key, list);
    }
    if (list.length >= MAX_IDLE_PER_TARGET) conn.socket.destroy();
    else list.push(conn);
  }

  private dropIdle(conn: Connection): void {
    const list = this.idle.get(conn.key);
    const at = list?.indexOf(conn) ?? -1;
    if (list !== undefined && at >= 0) list.splice(at, 1);
  }
}

/** Runs one exchange on `conn`: write the head, frame the answer, hand the connection back when clean. */
function serve(
  conn: Connection,
  head: string,
  method: string,
  maxHeadBytes: number,
  release: () => void,
  resolve: (answer: LeanAnswer) => void,
  reject: (err: Error) => void,
  reused: boolean,
): { abort(): void } {
  const socket = conn.socket;
  let pending: Buffer | null = null;
  let response: ResponseHead | null = null;
  let body: Readable | null = null;
  let remaining = 0;
  let chunked: ChunkedState | null = null;
  let finished = false;

  const finish = (reuse: boolean) => {
    finished = true;
    conn.exchange = null;
    socket.resume();
    if (reuse) release();
    else socket.destroy();
  };
  const fail = (err: Error) => {
    if (finished) return;
    finish(false);
    if (body === null) reject(err);
    else body.destroy(err);
  };
  const complete = (extra: boolean) => {
    (body as Readable).push(null);
    finish((response as ResponseHead).keepAlive && !extra);
  };
  const onBody = (chunk: Buffer) => {
    const framing = (response as ResponseHead).framing;
    if (framing.kind === 'length') {
      const take = Math.min(remaining, chunk.length);
      remaining -= take;
      if (take > 0 && !(body as Readable).push(take === chunk.length ? chunk : chunk.subarray(0, take))) socket.pause();
      if (remaining === 0) complete(take < chunk.length);
      return;
    }
    if (framing.kind === 'chunked') {
      const step = decodeChunked(chunked as ChunkedState, chunk, maxHeadBytes);
      if (step.kind === 'invalid') return fail(upstreamError(`upstream chunked body: ${step.message}`, 'HPE_INVALID_CHUNK_SIZE'));
      let more = true;
      for (const piece of step.data) if (piece.length > 0) more = (body as Readable).push(piece) && more;
      if (!more) socket.pause();
      if (step.done) complete(step.rest !== null);
      return;
    }
    if (!(body as Readable).push(chunk)) socket.pause();
  };
  const onHead = (buf: Buffer) => {
    for (;;) {
      const parsed = parseResponseHead(buf, maxHeadBytes, method);
      if (parsed.kind === 'need-more') {
        pending = buf;
        return;
      }
      if (parsed.kind === 'invalid') {
        // llhttp's codes, so node's client and this one are classified alike (upstream.ts).
        return fail(upstreamError(`upstream response: ${parsed.message}`, parsed.framingConflict ? 'HPE_UNEXPECTED_CONTENT_LENGTH' : 'HPE_INVALID_RESPONSE'));
      }
      const rest = buf.subarray(parsed.head.headBytes);
      // Interim answers (100, 103) precede the real one on the same connection.
      if (parsed.head.status < 200) {
        buf = rest;
        if (buf.length === 0) return;
        continue;
      }
      response = parsed.head;
      const framing = response.framing;
      const bodyBytes = framing.kind === 'none' ? 0 : framing.kind === 'length' ? framing.bytes : -1;
      if (bodyBytes >= 0 && rest.length >= bodyBytes) {
        // The common small answer arrives with its head: hand it over whole, no stream per request.
        finish(response.keepAlive && rest.length === bodyBytes);
        resolve(wholeAnswer(response, rest.subarray(0, bodyBytes)));
        return;
      }
      body = new Readable({ read: () => void socket.resume() });
      if (response.framing.kind === 'length') remaining = response.framing.bytes;
      if (response.framing.kind === 'chunked') chunked = chunkedStart();
      const trailers = chunked;
      resolve({ status: response.status, headers: response.headers, body, whole: null, trailers: () => (trailers === null ? {} : trailers.trailers) });
      if (rest.length > 0) onBody(rest);
      return;
    }
  };

  conn.exchange = {
    onData(chunk) {
      if (response !== null) return onBody(chunk);
      onHead(pending === null ? chunk : Buffer.concat([pending, chunk]));
    },
    onClose(err) {
      if (finished) return;
      // A close-delimited body ends at a clean close; a reset cuts it short and must not pass as complete.
      if (response !== null && response.framing.kind === 'close' && err === null) {
        complete(false);
        return;
      }
      const nothingYet = response === null && pending === null;
      const error = err ?? upstreamError('upstream closed the connection before the response was complete', 'ECONNRESET');
      fail(reused && nothingYet ? Object.assign(error, { retry: true }) : error);
    },
  };
  socket.write(head, 'latin1');
  return { abort: () => fail(upstreamError('request aborted', 'ECONNABORTED')) };
}

function wholeAnswer(head: ResponseHead, whole: Buffer): LeanAnswer {
  return { status: head.status, headers: head.headers, body: null, whole, trailers: noTrailers };
}

const noTrailers = (): null => null;
