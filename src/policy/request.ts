/**
 * Request-stage conditions: HTTP methods, path globs and the header templates of inject rules.
 * Paths are normalised once per request (query dropped, unreserved escapes decoded, dot segments
 * removed) so a deny on `/admin/**` cannot be dodged with `/x/../admin` or `/%61dmin`. Servers
 * disagree about three things, so we never guess and a path has one reading per way a server may
 * read it, judged by decide() in all of them: encoded slashes and backslashes (`/@types%2fnode` is one
 * npm package; some servers read `/a%2f..%2fadmin` as `/admin`), empty segments (RFC 3986 keeps
 * them, so `/v1//../admin` is `/v1/admin`; nginx merges slashes first and serves `/admin`) and `;`
 * parameters (Tomcat and Spring drop them from each segment: `/v1/..;/admin` is `/admin` there).
 * Secret values are never looked at here; only their names are collected.
 */
import type { HeaderInjection } from './types.js';
import { bad, ok, spaced, type Checked } from './patterns.js';

export function normalizeMethod(raw: string): string | null {
  const method = raw.toUpperCase();
  return /^[A-Z][A-Z0-9_-]*$/.test(method) ? method : null;
}

export function parseMethod(raw: string): Checked<string> {
  const padded = spaced(raw);
  if (padded !== null) return padded;
  const method = normalizeMethod(raw);
  return method !== null ? ok(method) : bad(`"${raw}" is not an HTTP method`, 'write a method name such as GET or POST');
}

export interface PathGlob {
  readonly text: string;
  readonly regex: RegExp;
}

/** `*` is any run of characters within one segment; `**` as a whole segment is any number of segments. */
export function parsePathGlob(raw: string): Checked<PathGlob> {
  const padded = spaced(raw);
  if (padded !== null) return padded;
  const text = raw;
  if (!text.startsWith('/')) return bad(`path "${raw}" does not start with "/"`, `write "/${text}"`);
  if (/[?#\s\\]/.test(text)) return bad(`path "${raw}" contains a query, fragment, space or backslash`, 'match on the path only, e.g. "/repos/**"');
  if (text.includes('//') || text.includes(';')) {
    return bad(`path "${raw}" has an empty segment or a ";" parameter, which servers read differently`, 'write the path with single slashes and without ";" parameters, e.g. "/repos/**"');
  }
  const segments = text.split('/').slice(1);
  let source = '^';
  for (const segment of segments) {
    if (segment === '**') {
      source += '(?:/.*)?';
      continue;
    }
    if (segment.includes('**')) return bad(`path "${raw}": "**" must be a whole segment`, 'write "/a/**" or "/a/*.json"');
    source += '/' + segment.split('*').map(escapeRegex).join('[^/]*');
  }
  const normalized = normalizePath(text.replace(/\*/g, 'x'), { ...RFC_READING, slashes: 'decode' });
  if (normalized === null || normalized !== text.replace(/\*/g, 'x')) {
    const how = 'write the path without "." or ".." segments, unreserved characters unescaped (%61 is "a") and other escapes in upper case (%3A)';
    return bad(`path "${raw}" is not in normal form (dot segments or escapes)`, normalized !== null && !text.includes('*') ? `${how}: "${normalized}"` : how);
  }
  return ok({ text, regex: new RegExp(source + '$') });
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function isUnreserved(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126;
}

/**
 * How a server may read a path: encoded "/" and "\\" (%2F, %5C) kept as escapes inside their segment
 * or read as "/"; runs of "/" kept as empty segments or merged; `;parameters` kept or dropped from
 * each segment.
 */
export interface PathReading {
  readonly slashes: 'keep' | 'decode';
  readonly emptySegments: 'keep' | 'merge';
  readonly parameters: 'keep' | 'drop';
}

/** RFC 3986 as written: the reading records and rule paths are in. */
export const RFC_READING: PathReading = { slashes: 'keep', emptySegments: 'keep', parameters: 'keep' };
const ALL_READINGS: readonly PathReading[] = (['keep', 'decode'] as const).flatMap((slashes) =>
  (['keep', 'merge'] as const).flatMap((emptySegments) => (['keep', 'drop'] as const).map((parameters) => ({ slashes, emptySegments, parameters }))),
);

/** What servers read differently: an encoded slash or backslash, an empty segment, a parameter. */
const READ_DIFFERENTLY = /%2f|%5c|\/\/|;/i;

/** A request target without its query and fragment. */
function pathOf(raw: string): string {
  let end = raw.length;
  const q = raw.indexOf('?');
  if (q !== -1) end = q;
  const h = raw.indexOf('#');
  if (h !== -1 && h < end) end = h;
  return raw.slice(0, end);
}

/**
 * The distinct normal forms of a request target's path, the RFC 3986 one first: one for an ordinary
 * path, more when it holds an encoded slash, an empty segment or a `;`. Null when it is malformed.
 */
export function pathReadings(raw: string): readonly string[] | null {
  const first = normalizePath(raw, RFC_READING);
  if (first === null) return null;
  if (!READ_DIFFERENTLY.test(pathOf(raw))) return [first];
  const readings = [first];
  for (const reading of ALL_READINGS) {
    const text = normalizePath(raw, reading) as string;
    if (!readings.includes(text)) readings.push(text);
  }
  return readings;
}

/** RFC 3986 normalisation of a request target's path in one reading; null when it is malformed. */
export function normalizePath(raw: string, reading: PathReading): string | null {
  const path = pathOf(raw);
  if (path.charCodeAt(0) !== 47 || path.includes('\\')) return null;
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 32 || c === 127) return null;
    if (c !== 37 /* % */) {
      decoded += path[i];
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) return null;
    const byte = parseInt(hex, 16);
    if (byte === 0) return null;
    if (byte === 47 || byte === 92) decoded += reading.slashes === 'decode' ? '/' : '%' + hex.toUpperCase();
    else decoded += isUnreserved(byte) ? String.fromCharCode(byte) : '%' + hex.toUpperCase();
    i += 2;
  }
  if (reading.parameters === 'drop') decoded = decoded.replace(/;[^/]*/g, '');
  if (reading.emptySegments === 'merge') decoded = decoded.replace(/\/{2,}/g, '/');
  if (!decoded.includes('/.')) return decoded;
  const out: string[] = [];
  const segments = decoded.split('/').slice(1);
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '.' || segment === '..') {
      if (segment === '..') out.pop();
      if (last) out.push('');
    } else {
      out.push(segment);
    }
  });
  return '/' + out.join('/');
}

const FORBIDDEN_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive', 'proxy-connection']);

export function parseHeaderName(raw: string): Checked<string> {
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(raw)) return bad(`"${raw}" is not a header name`, 'use a token such as Authorization or X-Api-Key');
  if (FORBIDDEN_HEADERS.has(raw.toLowerCase())) {
    return bad(`header "${raw}" controls framing or routing and cannot be injected`, 'inject an authentication header such as Authorization instead');
  }
  return ok(raw);
}

/** `Bearer ${secret:GITHUB_TOKEN}`: only `${secret:NAME}` references are placeholders. */
export function parseHeaderTemplate(header: string, raw: string): Checked<HeaderInjection> {
  if (/[\r\n\0]/.test(raw)) return bad(`the value of ${header} contains a line break or NUL`, 'write the value on one line');
  const secrets: string[] = [];
  const placeholder = /\$\{([^}]*)\}/g;
  for (let m = placeholder.exec(raw); m !== null; m = placeholder.exec(raw)) {
    const ref = /^secret:([A-Za-z_][A-Za-z0-9_]*)$/.exec(m[1] as string);
    if (ref === null) return bad(`"${m[0]}" in ${header} is not a secret reference`, 'write ${secret:NAME}, NAME being letters, digits and underscores');
    if (!secrets.includes(ref[1] as string)) secrets.push(ref[1] as string);
  }
  if (raw.replace(placeholder, '').includes('${')) return bad(`unclosed "\${" in ${header}`, 'close the reference: ${secret:NAME}');
  if (secrets.length === 0) {
    return bad(`the value of ${header} references no secret`, 'write the credential as ${secret:NAME} so it never lives in the policy file');
  }
  return ok({ header, template: raw, secrets });
}
