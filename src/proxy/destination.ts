/**
 * Where a guest says it wants to go, parsed strictly: CONNECT authorities, absolute-form URLs and
 * Host/:authority headers become one `Destination` (a normalised name or a canonical IP, and a port).
 * Pure functions over strings. They never resolve, never guess (no WHATWG URL leniency: `127.1` is an
 * IP trick and invalid, not 127.0.0.1) and never accept user-info, bare IPv6 or a malformed port.
 */
import { normalizeHost, parseIpLiteral } from '../policy/index.js';

export type Destination =
  | { readonly kind: 'name'; readonly host: string; readonly port: number }
  | { readonly kind: 'ip'; readonly ip: string; readonly port: number };

export type DestinationParse =
  | { readonly kind: 'ok'; readonly destination: Destination }
  | { readonly kind: 'invalid'; readonly detail: string };

export type AbsoluteUrlParse =
  | { readonly kind: 'ok'; readonly destination: Destination; readonly path: string }
  | { readonly kind: 'invalid'; readonly detail: string };

function invalid(detail: string): { kind: 'invalid'; detail: string } {
  return { kind: 'invalid', detail };
}

/** A decimal port 1-65535 with no sign, spaces or leading zeros beyond one digit; null otherwise. */
export function parsePort(raw: string): number | null {
  if (raw.length === 0 || raw.length > 5) return null;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 48 || c > 57) return null;
  }
  if (raw.length > 1 && raw.charCodeAt(0) === 48) return null;
  const port = Number(raw);
  return port >= 1 && port <= 65535 ? port : null;
}

/** A host (name or IP literal, IPv6 in brackets) without a port. */
export function parseHost(raw: string): { kind: 'name'; host: string } | { kind: 'ip'; ip: string } | null {
  const ip = parseIpLiteral(raw);
  if (ip !== null) return { kind: 'ip', ip };
  if (raw.startsWith('[') || raw.includes(':')) return null;
  const host = normalizeHost(raw);
  return host === null ? null : { kind: 'name', host };
}

/**
 * `host:port`, `[v6]:port`, or (when `defaultPort` is given) a bare host. CONNECT passes null: its
 * authority must carry a port.
 */
export function parseAuthority(raw: string, defaultPort: number | null): DestinationParse {
  if (raw.length === 0 || raw.length > 300) return invalid('empty or oversized authority');
  if (raw.includes('@')) return invalid('user-info is not allowed in an authority');
  let hostPart: string;
  let portPart: string | null;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) return invalid('unterminated IPv6 literal');
    hostPart = raw.slice(0, close + 1);
    const rest = raw.slice(close + 1);
    if (rest === '') portPart = null;
    else if (rest.startsWith(':')) portPart = rest.slice(1);
    else return invalid('junk after IPv6 literal');
  } else {
    const colon = raw.lastIndexOf(':');
    if (colon >= 0 && raw.indexOf(':') !== colon) return invalid('IPv6 literals must be in brackets');
    hostPart = colon < 0 ? raw : raw.slice(0, colon);
    portPart = colon < 0 ? null : raw.slice(colon + 1);
  }
  let port: number | null;
  if (portPart === null) port = defaultPort;
  else port = parsePort(portPart);
  if (port === null) return invalid(portPart === null ? 'a port is required' : `invalid port "${portPart}"`);
  const host = parseHost(hostPart);
  if (host === null) return invalid(`invalid host "${hostPart}"`);
  return {
    kind: 'ok',
    destination: host.kind === 'ip' ? { kind: 'ip', ip: host.ip, port } : { kind: 'name', host: host.host, port },
  };
}

/**
 * An absolute-form request target: `http://authority[/path][?query]`. Plain proxy requests must be
 * http (https goes via CONNECT); inside an intercepted tunnel a client may send `https://` ones.
 */
export function parseAbsoluteUrl(raw: string, schemeName: 'http' | 'https' = 'http'): AbsoluteUrlParse {
  const scheme = `${schemeName}://`;
  if (raw.length < scheme.length || raw.slice(0, scheme.length).toLowerCase() !== scheme) {
    return invalid(`only absolute ${scheme} URLs are accepted here`);
  }
  const rest = raw.slice(scheme.length);
  let end = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i];
    if (c === '/' || c === '?' || c === '#') {
      end = i;
      break;
    }
  }
  const authority = parseAuthority(rest.slice(0, end), schemeName === 'http' ? 80 : 443);
  if (authority.kind === 'invalid') return authority;
  let path = rest.slice(end);
  const hash = path.indexOf('#');
  if (hash >= 0) path = path.slice(0, hash);
  if (path === '') path = '/';
  else if (path.startsWith('?')) path = `/${path}`;
  return { kind: 'ok', destination: authority.destination, path };
}

/** `host:port` or `[v6]:port`, for messages and audit. */
export function describeDestination(destination: Destination): string {
  if (destination.kind === 'name') return `${destination.host}:${destination.port}`;
  return destination.ip.includes(':') ? `[${destination.ip}]:${destination.port}` : `${destination.ip}:${destination.port}`;
}

export function destinationHost(destination: Destination): string {
  return destination.kind === 'name' ? destination.host : destination.ip;
}
