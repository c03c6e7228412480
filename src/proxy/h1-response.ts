/**
 * Sans-IO HTTP/1.1 framing for the lean upstream exchange (h1-exchange.ts): the request head we send,
 * the response head we read and the body framing it implies, and a chunked-body decoder. Pure functions
 * over strings and Buffers. Anything ambiguous (Content-Length with Transfer-Encoding, conflicting
 * lengths, bare LF, obs-fold, a protocol switch we never asked for) is an error, never a guess about
 * where a body ends: guessing is how responses get smuggled onto a reused connection.
 */
import type { IncomingHttpHeaders } from 'node:http';

export type BodyFraming =
  | { readonly kind: 'none' }
  | { readonly kind: 'length'; readonly bytes: number }
  | { readonly kind: 'chunked' }
  | { readonly kind: 'close' };

export interface ResponseHead {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly framing: BodyFraming;
  /** Whether the connection may carry another request once this body is complete. */
  readonly keepAlive: boolean;
  /** Bytes of the head, blank line included. */
  readonly headBytes: number;
}

export type HeadParse =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'head'; readonly head: ResponseHead }
  /** `framingConflict`: the body's length is ambiguous (Content-Length against Transfer-Encoding or itself). */
  | { readonly kind: 'invalid'; readonly message: string; readonly framingConflict?: true };

const NEED_MORE: HeadParse = { kind: 'need-more' };
/** The blank line that ends a message head (shared with the request-head parser). */
export const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
/** RFC 9110 token: header field names. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/;
/** node's rule for header values (checkInvalidHeaderChar); the same bytes node itself would refuse to send. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/** node's rule for request targets (INVALID_PATH_REGEX). */
const BAD_PATH = /[^\u0021-\u00ff]/;
const HEX = /^[0-9a-fA-F]{1,12}$/;
const DIGITS = /^\d{1,15}$/;
/** A CR not followed by LF, or an LF not preceded by CR (no lookbehind: it is slow in V8). */
const BARE_CR_OR_LF = /\r(?!\n)|(?:^|[^\r])\n/;
/** A byte node would refuse anywhere in a head; CR and LF are checked apart (only as CRLF pairs). */
const BAD_HEAD_BYTE = /[^\t\r\n\x20-\x7e\x80-\xff]/;

/**
 * `METHOD path HTTP/1.1`, Host first, then `headers`, as one latin1 string; null when any part holds a
 * byte node would refuse (the caller then takes node's own client, which reports the error).
 */
export function requestHead(method: string, path: string, authority: string, headers: Record<string, string | string[]>): string | null {
  if (!TOKEN.test(method) || BAD_PATH.test(path) || BAD_VALUE.test(authority)) return null;
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n`;
  for (const name in headers) {
    if (!TOKEN.test(name)) return null;
    const value = headers[name] as string | string[];
    for (const one of typeof value === 'string' ? [value] : value) {
      if (BAD_VALUE.test(one)) return null;
      head += `${name}: ${one}\r\n`;
    }
  }
  return `${head}\r\n`;
}

function invalid(message: string): HeadParse {
  return { kind: 'invalid', message };
}

/** Optional whitespace around a field value is spaces and tabs only (String.trim would also eat 0xa0). */
export function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--;
  return text.slice(start, end);
}

/** Adds `name: value` as node's IncomingMessage would: set-cookie as a list, others joined with ", ". */
function addField(fields: Record<string, string | string[]>, line: string, scanned: boolean): string | null {
  const colon = line.indexOf(':');
  if (colon <= 0) return 'malformed header line';
  const name = line.slice(0, colon).toLowerCase();
  if (!TOKEN.test(name)) return 'malformed header name';
  const value = trimOws(line.slice(colon + 1));
  if (!scanned && BAD_VALUE.test(value)) return 'invalid byte in a header value';
  const existing = fields[name];
  if (existing === undefined) fields[name] = name === 'set-cookie' ? [value] : value;
  else if (Array.isArray(existing)) existing.push(value);
  else fields[name] = `${existing}, ${value}`;
  return null;
}

/** Whether a comma-separated header value (or list of them) holds `token` (lowercase), case-insensitively. */
export function hasToken(list: string | string[] | undefined, token: string): boolean {
  if (list === undefined) return false;
  // The common single value: no split, no closure.
  if (typeof list === 'string' && !list.includes(',')) return trimOws(list).toLowerCase() === token;
  const text = Array.isArray(list) ? list.join(',') : list;
  return text.split(',').some((part) => trimOws(part).toLowerCase() === token);
}

/** The body length a Content-Length value gives (all of a repeated value must agree), or -1. */
function contentLength(value: string): number {
  if (!value.includes(',')) return DIGITS.test(value) ? Number(value) : -1;
  const values = value.split(',').map(trimOws);
  return values.every((v) => DIGITS.test(v) && v === values[0]) ? Number(values[0]) : -1;
}

/** The response head at the start of `buf`, once complete; 1xx heads come back as heads too (callers skip them). */
export function parseResponseHead(buf: Buffer, maxBytes: number, requestMethod: string): HeadParse {
  const end = buf.indexOf(HEAD_END);
  if (end < 0) return buf.length > maxBytes ? invalid('response head too large') : NEED_MORE;
  if (end + 4 > maxBytes) return invalid('response head too large');
  const text = buf.toString('latin1', 0, end);
  // One scan each for the whole head: bytes node refuses, then a CR or LF that is not part of a CRLF.
  if (BAD_HEAD_BYTE.test(text)) return invalid('invalid byte in the response head');
  if (BARE_CR_OR_LF.test(text)) return invalid('bare CR or LF in the response head');
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = text.length;
  const status = STATUS_LINE.exec(text.slice(0, lineEnd));
  if (status === null) return invalid('malformed status line');
  const code = Number(status[2]);
  if (code === 101) return invalid('protocol switch that was not requested');
  const headers: Record<string, string | string[]> = {};
  for (let at = lineEnd + 2; at < text.length; ) {
    let next = text.indexOf('\r\n', at);
    if (next < 0) next = text.length;
    const problem = addField(headers, text.slice(at, next), true);
    if (problem !== null) return invalid(problem);
    at = next + 2;
  }
  const headBytes = end + 4;
  const te = headers['transfer-encoding'];
  const cl = headers['content-length'];
  if (te !== undefined && cl !== undefined) return { kind: 'invalid', message: 'both Content-Length and Transfer-Encoding', framingConflict: true };
  let framing: BodyFraming;
  if (code < 200 || code === 204 || code === 304 || requestMethod === 'HEAD') framing = { kind: 'none' };
  else if (te !== undefined) {
    const codings = (te as string).split(',');
    framing = trimOws(codings[codings.length - 1] as string).toLowerCase() === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  } else if (cl !== undefined) {
    const bytes = contentLength(cl as string);
    if (bytes < 0) return { kind: 'invalid', message: 'malformed or conflicting Content-Length', framingConflict: true };
    framing = { kind: 'length', bytes };
  } else framing = { kind: 'close' };
  const keepAlive = status[1] === '1' && framing.kind !== 'close' && !hasToken(headers['connection'], 'close');
  return { kind: 'head', head: { status: code, headers, framing, keepAlive, headBytes } };
}

/** Where a chunked body decoder stands between calls; start from `chunkedStart()`. */
export interface ChunkedState {
  phase: 'size' | 'data' | 'data-end' | 'trailers' | 'done';
  remaining: number;
  /** An incomplete size, CRLF or trailer line carried to the next call. */
  carry: Buffer | null;
  trailers: Record<string, string | string[]>;
  trailerBytes: number;
}

export function chunkedStart(): ChunkedState {
  return { phase: 'size', remaining: 0, carry: null, trailers: {}, trailerBytes: 0 };
}

export type ChunkedStep =
  | { readonly kind: 'ok'; readonly data: readonly Buffer[]; readonly done: boolean; readonly rest: Buffer | null }
  | { readonly kind: 'invalid'; readonly message: string };

/** Decodes what `input` holds; `rest` is whatever followed the final CRLF (a clean exchange has none). */
export function decodeChunked(state: ChunkedState, input: Buffer, maxLineBytes: number): ChunkedStep {
  const buf = state.carry === null ? input : Buffer.concat([state.carry, input]);
  state.carry = null;
  const data: Buffer[] = [];
  let i = 0;
  const keep = (): ChunkedStep | null => {
    if (buf.length - i > maxLineBytes) return { kind: 'invalid', message: 'chunk line too long' };
    state.carry = i < buf.length ? buf.subarray(i) : null;
    return null;
  };
  while (i < buf.length) {
    if (state.phase === 'data') {
      const take = Math.min(state.remaining, buf.length - i);
      data.push(buf.subarray(i, i + take));
      state.remaining -= take;
      i += take;
      if (state.remaining === 0) state.phase = 'data-end';
      continue;
    }
    if (state.phase === 'done') break;
    if (state.phase === 'data-end') {
      if (buf.length - i < 2) return keep() ?? { kind: 'ok', data, done: false, rest: null };
      if (buf[i] !== 0x0d || buf[i + 1] !== 0x0a) return { kind: 'invalid', message: 'chunk not followed by CRLF' };
      i += 2;
      state.phase = 'size';
      continue;
    }
    const lineEnd = buf.indexOf(CRLF, i);
    if (lineEnd < 0) return keep() ?? { kind: 'ok', data, done: false, rest: null };
    const line = buf.toString('latin1', i, lineEnd);
    i = lineEnd + 2;
    if (state.phase === 'size') {
      const semicolon = line.indexOf(';');
      const size = trimOws(semicolon < 0 ? line : line.slice(0, semicolon));
      if (!HEX.test(size) || /[\r\n]/.test(line)) return { kind: 'invalid', message: 'malformed chunk size' };
      state.remaining = parseInt(size, 16);
      state.phase = state.remaining === 0 ? 'trailers' : 'data';
      continue;
    }
    // trailers
    if (line === '') {
      state.phase = 'done';
      break;
    }
    state.trailerBytes += line.length + 2;
    if (state.trailerBytes > maxLineBytes) return { kind: 'invalid', message: 'trailers too large' };
    const problem = addField(state.trailers, line, false);
    if (problem !== null) return { kind: 'invalid', message: problem };
  }
  const done = state.phase === 'done';
  return { kind: 'ok', data, done, rest: done && i < buf.length ? buf.subarray(i) : null };
}
