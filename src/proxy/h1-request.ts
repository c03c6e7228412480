/**
 * The sans-IO HTTP/1.1 request-head parser of the lean intercepted path (h1-serve.ts). It recognises
 * a strict subset only: a bodiless GET or HEAD, HTTP/1.1, each header once, no Content-Length,
 * Transfer-Encoding, Upgrade or Expect, no obs-fold, no bare CR or LF, no control byte, within the
 * head size limit. Everything else is `not-lean`: the connection then goes to node's own HTTP/1 parser,
 * which answers smuggling, oversized heads and malformed requests exactly as it always did. Never
 * accepts a request node would reject or frame differently; never guesses.
 */
import { HEAD_END, hasToken, TOKEN, trimOws } from './h1-response.js';

export interface LeanRequestHead {
  readonly method: 'GET' | 'HEAD';
  /** The request target as sent (origin-form or absolute-form). */
  readonly target: string;
  /** Lowercase names, each at most once, values without surrounding whitespace. */
  readonly headers: Record<string, string>;
  /** Bytes of the head, blank line included. */
  readonly headBytes: number;
  /** False when the guest asked to close after this answer (Connection: close). */
  readonly keepAlive: boolean;
}

export type NotLeanReason = 'method' | 'version' | 'target' | 'body' | 'upgrade' | 'expect' | 'duplicate' | 'malformed' | 'too_large';

export type RequestHeadParse =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'head'; readonly head: LeanRequestHead }
  | { readonly kind: 'not-lean'; readonly why: NotLeanReason };

const NEED_MORE: RequestHeadParse = { kind: 'need-more' };
/** Any byte but tab, CR, LF, printable ASCII and obs-text: node's parser refuses these in a head. */
const BAD_HEAD_BYTE = /[^\t\r\n\x20-\x7e\x80-\xff]/;
/** Request targets: visible ASCII only (anything else is left to node). */
const BAD_TARGET = /[^\x21-\x7e]/;
const VERSION = ' HTTP/1.1';

const NOT_LEAN: { readonly [K in NotLeanReason]: RequestHeadParse } = {
  method: { kind: 'not-lean', why: 'method' },
  version: { kind: 'not-lean', why: 'version' },
  target: { kind: 'not-lean', why: 'target' },
  body: { kind: 'not-lean', why: 'body' },
  upgrade: { kind: 'not-lean', why: 'upgrade' },
  expect: { kind: 'not-lean', why: 'expect' },
  duplicate: { kind: 'not-lean', why: 'duplicate' },
  malformed: { kind: 'not-lean', why: 'malformed' },
  too_large: { kind: 'not-lean', why: 'too_large' },
};

/** Headers whose presence means a body, a protocol switch or an interim answer: node's path serves those. */
function refusal(name: string): NotLeanReason | null {
  switch (name) {
    case 'content-length':
    case 'transfer-encoding':
      return 'body';
    case 'upgrade':
    case 'http2-settings':
      return 'upgrade';
    case 'expect':
      return 'expect';
    default:
      return null;
  }
}


/** The request head at the start of `buf`, once complete and within `maxBytes`. */
export function parseRequestHead(buf: Buffer, maxBytes: number): RequestHeadParse {
  const end = buf.indexOf(HEAD_END);
  if (end < 0) return buf.length >= maxBytes ? NOT_LEAN.too_large : NEED_MORE;
  if (end + 4 > maxBytes) return NOT_LEAN.too_large;
  const text = buf.toString('latin1', 0, end);
  if (BAD_HEAD_BYTE.test(text)) return NOT_LEAN.malformed;

  let lineEnd = text.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = text.length;
  const line = text.slice(0, lineEnd);
  const space = line.indexOf(' ');
  const method = line.slice(0, space);
  if (method !== 'GET' && method !== 'HEAD') return NOT_LEAN.method;
  if (!line.endsWith(VERSION)) return NOT_LEAN.version;
  const target = line.slice(space + 1, line.length - VERSION.length);
  if (target.length === 0 || BAD_TARGET.test(target) || line.includes('\n') || line.includes('\r')) return NOT_LEAN.target;

  const headers: Record<string, string> = {};
  let keepAlive = true;
  let at = lineEnd + 2;
  while (at < text.length) {
    let next = text.indexOf('\r\n', at);
    if (next < 0) next = text.length;
    const field = text.slice(at, next);
    at = next + 2;
    const colon = field.indexOf(':');
    if (colon <= 0 || field.includes('\n') || field.includes('\r')) return NOT_LEAN.malformed;
    const rawName = field.slice(0, colon);
    if (!TOKEN.test(rawName)) return NOT_LEAN.malformed;
    const name = rawName.toLowerCase();
    const refused = refusal(name);
    if (refused !== null) return NOT_LEAN[refused];
    // An inherited name (constructor, __proto__) reads as present: such a request takes node's path.
    if (headers[name] !== undefined || name === '__proto__') return NOT_LEAN.duplicate;
    const value = trimOws(field.slice(colon + 1));
    if (name === 'connection') {
      if (value.toLowerCase().includes('upgrade')) return NOT_LEAN.upgrade;
      if (hasToken(value, 'close')) keepAlive = false;
    }
    headers[name] = value;
  }
  return { kind: 'head', head: { method, target, headers, headBytes: end + 4, keepAlive } };
}
