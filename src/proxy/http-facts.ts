/**
 * Copies the facts the pure request step needs out of node's parsed HTTP/1 or HTTP/2 request, and
 * builds the header set sent upstream (hop-by-hop and proxy headers removed). Plain data in, plain
 * data out; nothing here decides.
 */
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { DenyAnswer } from './answers.js';
import { REASON_HEADER } from './answers.js';
import type { RequestFacts } from './request-step.js';

export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

/** Headers that describe one hop, never forwarded (RFC 9110 7.6.1, plus proxy credentials). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'host',
  'http2-settings',
  // Answered by the proxy itself (serve-request.ts) once the request is allowed; the body then
  // follows at once, so asking the origin again would only delay it.
  'expect',
]);

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

export function isHttp2(req: ClientRequest): req is Http2ServerRequest {
  return req.httpVersionMajor === 2;
}

export function requestFacts(req: ClientRequest, path: string): RequestFacts {
  let contentLengthCount = 0;
  let hasTransferEncoding = false;
  let headerListBytes = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const rawName = raw[i] as string;
    headerListBytes += rawName.length + (raw[i + 1] as string).length + 32;
    // Lowercase only the names that could match: this loop runs for every header of every request.
    if (rawName.length === 14 && rawName.toLowerCase() === 'content-length') contentLengthCount++;
    else if (rawName.length === 17 && rawName.toLowerCase() === 'transfer-encoding') hasTransferEncoding = true;
  }
  const h2 = isHttp2(req);
  const authority = h2 ? (header(req.headers, ':authority') ?? header(req.headers, 'host')) : header(req.headers, 'host');
  return {
    method: req.method ?? 'GET',
    path,
    authority,
    authorityField: h2 ? 'authority' : 'host',
    contentLengthCount,
    hasTransferEncoding,
    contentType: header(req.headers, 'content-type'),
    accept: header(req.headers, 'accept'),
    // HTTP/1 heads were capped by node's parser as they came (maxHeaderSize).
    ...(h2 ? { headerListBytes } : {}),
  };
}

/**
 * Headers to send upstream: everything but pseudo-headers, hop-by-hop headers and the headers the
 * Connection header names. `te: trailers` survives (gRPC needs it over HTTP/2).
 */
export function forwardHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  return filterHeaders(headers, true);
}

/** Response headers to send back to the guest (same filtering, no `te`). */
export function responseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  return filterHeaders(headers, false);
}

// for-in and no `delete`: this runs twice per request, and deleting keys turns the object into a slow dictionary.
function filterHeaders(headers: IncomingHttpHeaders, keepTeTrailers: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = headers.connection === undefined ? undefined : header(headers, 'connection');
  const named = connection === undefined ? null : connectionNames(connection);
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name.charCodeAt(0) === COLON) continue;
    if (HOP_BY_HOP.has(name) || named?.has(name)) {
      if (keepTeTrailers && name === 'te' && header(headers, 'te')?.toLowerCase() === 'trailers') out[name] = 'trailers';
      continue;
    }
    out[name] = value;
  }
  return out;
}

const COLON = 0x3a;
const KEEP_ALIVE_ONLY: ReadonlySet<string> = new Set(['keep-alive']);
const CLOSE_ONLY: ReadonlySet<string> = new Set(['close']);

/** The header names a Connection value lists; the two usual single values need no split. */
function connectionNames(value: string): ReadonlySet<string> {
  const lower = value.toLowerCase();
  if (lower === 'keep-alive') return KEEP_ALIVE_ONLY;
  if (lower === 'close') return CLOSE_ONLY;
  return new Set(lower.split(',').map((s) => s.trim()));
}

/**
 * The HTTP/1.1 request header list (rawHeaders layout: name, value, ...; a repeated header repeats), Host first. node validates
 * every name and value of a list as it serialises it, but skips the per-header setHeader bookkeeping
 * an object costs.
 */
export function headerList(headers: Record<string, string | string[]>, host: string): string[] {
  const list = ['host', host];
  for (const name in headers) {
    const value = headers[name] as string | string[];
    if (typeof value === 'string') list.push(name, value);
    else for (const one of value) list.push(name, one);
  }
  return list;
}

export function sendDeny(res: ClientResponse, answer: DenyAnswer): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${answer.message}\n`;
  res.writeHead(answer.status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    [REASON_HEADER]: answer.reason,
  });
  res.end(body);
}

/**
 * A deny written on a raw socket: CONNECT answers, upgrades and parse errors (then the socket closes),
 * or a lean HTTP/1.1 connection that stays open for the next request.
 */
export function rawDeny(answer: DenyAnswer, connection: 'close' | 'keep-alive' = 'close'): string {
  const statusText = STATUS_CODES[answer.status] ?? 'Error';
  const body = `${answer.message}\n`;
  return (
    `HTTP/1.1 ${answer.status} ${statusText}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Microagent-Reason: ${answer.reason}\r\n` +
    `Connection: ${connection}\r\n\r\n${body}`
  );
}
