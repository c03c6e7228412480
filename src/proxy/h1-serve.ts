/**
 * The lean HTTP/1.1 side of an intercepted connection (ALPN http/1.1 or none): request heads are parsed
 * by the sans-IO h1-request.ts and the answers written straight to the TLS socket, instead of node's
 * http server with its IncomingMessage/ServerResponse streams, which cost more CPU per request than the
 * rest of the proxy. It serves only what that parser accepts (bodiless GET/HEAD); at the first request
 * it does not accept, it hands the socket, with every byte it has not consumed, to node's HTTP/1 server
 * for good, so bodies, upgrades, smuggling and malformed or oversized heads keep node's handling. The
 * decision, audit and forwarding are the shared ones (serve-request.ts); this file only frames.
 * Never reads a request body, never answers a request it did not parse whole.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { childLog } from '../log.js';
import type { DenyAnswer } from './answers.js';
import type { GuestReply, HeaderMap } from './guest-reply.js';
import { parseRequestHead, type LeanRequestHead } from './h1-request.js';
import { rawDeny } from './http-facts.js';
import { boundRequestPath } from './identity.js';
import type { RequestFacts } from './request-step.js';
import type { ProxyRuntime } from './runtime.js';
import { refuseUnboundUrl, serveExchange, type FlowContext } from './serve-request.js';

export interface LeanConnectionParts {
  readonly rt: ProxyRuntime;
  readonly flow: FlowContext;
  /** Gives the socket to node's HTTP/1 server (the bytes not consumed were put back on it first). */
  readonly fallback: () => void;
  /** The handler node's server uses for requests it cannot parse (here: a head that never completes). */
  readonly onClientError: (err: NodeJS.ErrnoException, socket: Socket) => void;
}

const log = childLog('proxy');
const CRLF = '\r\n';

let dateSecond = -1;
let dateText = '';
/** The Date header node's server would add, formatted once per second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/**
 * The response head: the forwarder's headers as given, then the framing of what follows. `length` is
 * the body's byte count (replaces any Content-Length given), 'chunked', or 'as-is' for an answer that
 * carries no body (HEAD, 204, 304), whose Content-Length describes the resource and stays.
 */
export function responseHead(status: number, headers: HeaderMap, length: number | 'chunked' | 'as-is', keepAlive: boolean): string {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}${CRLF}`;
  let dated = false;
  for (const name in headers) {
    if (name === 'content-length' && length !== 'as-is') continue;
    if (name === 'date') dated = true;
    const value = headers[name] as string | string[];
    if (typeof value === 'string') head += `${name}: ${value}${CRLF}`;
    else for (const one of value) head += `${name}: ${one}${CRLF}`;
  }
  if (!dated) head += `date: ${httpDate()}${CRLF}`;
  if (typeof length === 'number') head += `content-length: ${length}${CRLF}`;
  else if (length === 'chunked') head += `transfer-encoding: chunked${CRLF}`;
  return `${head}connection: ${keepAlive ? 'keep-alive' : 'close'}${CRLF}${CRLF}`;
}

function bodiless(method: string, status: number): boolean {
  return method === 'HEAD' || status === 204 || status === 304 || status < 200;
}

/** Head and body in one buffer: one TLS write, one syscall. */
function joined(head: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(head.length + body.length);
  out.write(head, 0, 'latin1');
  body.copy(out, head.length);
  return out;
}

/** One request's reply on the lean connection; `done` hands the connection back for the next head. */
function leanReply(socket: TLSSocket, head: LeanRequestHead, done: () => void): GuestReply & { gone(): void } {
  const keepAlive = head.keepAlive;
  let started = false;
  let chunked = false;
  let goneListener: (() => void) | null = null;
  return {
    gone: () => goneListener?.(),
    onGone: (listener) => void (goneListener = listener),
    deny(answer: DenyAnswer) {
      if (started) {
        socket.destroy();
        return;
      }
      // UTF-8, as its Content-Length counts it: a rule id may hold any character.
      socket.write(rawDeny(answer, keepAlive ? 'keep-alive' : 'close'), 'utf8');
      done();
    },
    whole(status, headers, body) {
      // Trailers are dropped, as node drops them on an answer with a Content-Length.
      if (bodiless(head.method, status)) socket.write(responseHead(status, headers, 'as-is', keepAlive), 'latin1');
      else socket.write(joined(responseHead(status, headers, body.length, keepAlive), body));
      done();
    },
    start(status, headers, declaredLength) {
      started = true;
      const empty = bodiless(head.method, status);
      chunked = !empty && declaredLength === null;
      socket.write(responseHead(status, headers, empty ? 'as-is' : (declaredLength ?? 'chunked'), keepAlive), 'latin1');
    },
    write(chunk) {
      if (!chunked) return socket.write(chunk);
      socket.cork();
      socket.write(`${chunk.length.toString(16)}${CRLF}`, 'latin1');
      socket.write(chunk);
      const more = socket.write(CRLF, 'latin1');
      socket.uncork();
      return more;
    },
    onDrain: (listener) => void socket.once('drain', listener),
    end(trailers) {
      if (chunked) {
        let tail = `0${CRLF}`;
        if (trailers !== null) for (const name in trailers) for (const one of ([] as string[]).concat(trailers[name] as string | string[])) tail += `${name}: ${one}${CRLF}`;
        socket.write(`${tail}${CRLF}`, 'latin1');
      }
      done();
    },
    destroy: () => void socket.destroy(),
  };
}

/** Serves `socket` (handshaken, ALPN not h2) with the lean path until it closes or falls back. */
export function serveLeanConnection(socket: TLSSocket, parts: LeanConnectionParts): void {
  const { rt, flow } = parts;
  const maxHead = rt.limits.maxHeaderBytes;
  const headTimeoutMs = Math.min(rt.limits.headersTimeoutMs, rt.limits.requestTimeoutMs);
  let pending: Buffer | null = null;
  let current: (GuestReply & { gone(): void }) | null = null;
  let closed = false;
  let headTimer: NodeJS.Timeout | null = null;

  const stopHeadTimer = () => {
    if (headTimer !== null) clearTimeout(headTimer);
    headTimer = null;
  };
  // Slowloris: a head must complete within the headers timeout, answered as node's server answers it.
  const startHeadTimer = () => {
    headTimer ??= setTimeout(() => {
      headTimer = null;
      if (current === null && !closed) parts.onClientError(Object.assign(new Error('request head timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket);
    }, headTimeoutMs);
  };

  const handOff = () => {
    stopHeadTimer();
    socket.off('data', onData);
    socket.off('close', onClose);
    if (pending !== null) socket.unshift(pending);
    pending = null;
    parts.fallback();
  };

  const finished = (keepAlive: boolean) => {
    current = null;
    if (!keepAlive) {
      closed = true;
      socket.end();
      return;
    }
    if (socket.isPaused()) socket.resume();
    // A pipelined head waits until the answer before it has been recorded as complete.
    if (pending !== null) queueMicrotask(next);
  };

  const serve = (head: LeanRequestHead) => {
    const reply = leanReply(socket, head, () => finished(head.keepAlive));
    current = reply;
    const path = boundRequestPath(flow.destination, head.target);
    if (path === null) {
      refuseUnboundUrl(rt, flow, head.method, reply);
      return;
    }
    const headers = head.headers;
    const facts: RequestFacts = {
      method: head.method,
      path,
      authority: headers.host,
      authorityField: 'host',
      contentLengthCount: 0,
      hasTransferEncoding: false,
      contentType: headers['content-type'],
      accept: headers.accept,
    };
    serveExchange(rt, flow, facts, { headers, http2: false, body: null }, reply).catch((err: unknown) => {
      log.error({ err }, 'lean request failed');
      socket.destroy();
    });
  };

  function next(): void {
    while (current === null && pending !== null && !closed) {
      const parsed = parseRequestHead(pending, maxHead);
      if (parsed.kind === 'need-more') {
        startHeadTimer();
        return;
      }
      if (parsed.kind === 'not-lean') {
        handOff();
        return;
      }
      stopHeadTimer();
      const rest = pending.length - parsed.head.headBytes;
      pending = rest > 0 ? pending.subarray(parsed.head.headBytes) : null;
      serve(parsed.head);
    }
  }

  function onData(chunk: Buffer): void {
    pending = pending === null ? chunk : Buffer.concat([pending, chunk]);
    if (current === null) next();
    // While an answer is in flight, read no further than one more head.
    else if (pending.length > maxHead) socket.pause();
  }

  function onClose(): void {
    closed = true;
    stopHeadTimer();
    current?.gone();
  }

  socket.on('data', onData);
  socket.on('close', onClose);
}
