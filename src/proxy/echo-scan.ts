/**
 * The scan that keeps an injected secret from coming back to the guest in a response: the value and
 * its base64 (and base64url) at any alignment, in the headers and the body. Pure, no sockets. A streamed body (server-sent events from
 * an LLM API, a chunked download) passes chunk by chunk, except a tail that could begin a secret
 * (`...sk-te`), held until the next chunk shows whether it does: the guest never receives any part of
 * an echo, and each event still arrives when it is sent. A compressed body is scanned decompressed.
 */
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

export type Needles = readonly Buffer[];

/** Shorter base64 runs than this are not looked for: they would match ordinary text. */
const MIN_ENCODED_NEEDLE = 8;

/**
 * What must never reach the guest: each secret as sent, and its base64 and base64url at each of the
 * three alignments it can have inside longer encoded data (`base64("Bearer " + secret)` starts the
 * secret one byte into a group). Only the characters that the secret's bytes alone determine are
 * kept: at alignment k the first ceil(8k/6) characters also carry the bytes before it, and the last
 * partial one the bytes after it.
 */
export function secretNeedles(secrets: readonly string[]): Needles {
  const needles: string[] = [];
  for (const secret of secrets) {
    if (secret.length === 0) continue;
    const bytes = Buffer.from(secret);
    needles.push(secret);
    for (let k = 0; k < 3; k++) {
      const encoded = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
      const own = encoded.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6));
      if (k > 0 && own.length < MIN_ENCODED_NEEDLE) continue;
      needles.push(own, own.replace(/\+/g, '-').replace(/\//g, '_'));
    }
  }
  return [...new Set(needles)].filter((n) => n.length > 0).map((n) => Buffer.from(n));
}

/** Names and values as sent, not a serialisation of them: JSON would escape a `"` or `\` in the secret. */
export function headersEcho(headers: Record<string, string | string[] | undefined>, needles: Needles): boolean {
  for (const name in headers) {
    const value = headers[name];
    for (const text of [name, ...(value === undefined ? [] : typeof value === 'string' ? [value] : value)]) {
      const bytes = Buffer.from(text);
      if (needles.some((n) => bytes.includes(n))) return true;
    }
  }
  return false;
}

/**
 * Why a collected answer must be withheld, or null: it echoes a secret (headers, decoded body or
 * trailers), or its body cannot be decoded within `max` to be scanned.
 */
export function wholeAnswerVerdict(
  body: Buffer,
  contentEncoding: string | undefined,
  headerSets: readonly Record<string, string | string[] | undefined>[],
  needles: Needles,
  max: number,
): 'secret_echo' | 'unscannable_response' | null {
  const readable = decodedForScan(body, contentEncoding, max);
  if (readable === null) return 'unscannable_response';
  return bodyEchoes(readable, needles) || headerSets.some((h) => headersEcho(h, needles)) ? 'secret_echo' : null;
}

export function bodyEchoes(body: Buffer, needles: Needles): boolean {
  return needles.some((n) => body.includes(n));
}

/** A body's bytes as the guest will read them, for the scan; null when they cannot be had within `max`. */
export function decodedForScan(body: Buffer, contentEncoding: string | undefined, max: number): Buffer | null {
  const codings = (contentEncoding ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'identity');
  let bytes = body;
  try {
    // Applied in the order listed, so they are undone last first.
    for (const coding of codings.reverse()) {
      const options = { maxOutputLength: max };
      if (coding === 'gzip' || coding === 'x-gzip') bytes = gunzipSync(bytes, options);
      else if (coding === 'deflate') bytes = inflateSync(bytes, options);
      else if (coding === 'br') bytes = brotliDecompressSync(bytes, options);
      else return null;
    }
  } catch {
    return null; // corrupt, or past `max` (a decompression bomb)
  }
  return bytes;
}

/** The scan of one streamed body: feed chunks in order, forward what `push` returns, then `end()`. */
export class StreamScan {
  private held: Buffer = Buffer.alloc(0);

  constructor(private readonly needles: Needles) {}

  /** The bytes safe to forward now (maybe none), or null once a needle appeared: forward nothing more. */
  push(chunk: Buffer): Buffer | null {
    const window = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    if (bodyEchoes(window, this.needles)) return null;
    const cut = window.length - pendingPrefix(window, this.needles);
    this.held = Buffer.from(window.subarray(cut)); // a copy: the chunk's memory is not ours to keep
    return window.subarray(0, cut);
  }

  /** The held tail, once the body ended: a needle's unfinished beginning, so not a needle. */
  end(): Buffer {
    const rest = this.held;
    this.held = Buffer.alloc(0);
    return rest;
  }
}

/** The length of the longest end of `window` that begins some needle without completing it. */
export function pendingPrefix(window: Buffer, needles: Needles): number {
  let longest = 0;
  for (const needle of needles) {
    const first = needle[0];
    for (let k = Math.min(needle.length - 1, window.length); k > longest; k--) {
      const start = window.length - k;
      if (window[start] === first && window.compare(needle, 0, k, start) === 0) {
        longest = k;
        break;
      }
    }
  }
  return longest;
}
