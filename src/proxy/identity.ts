/**
 * One identity per connection: the CONNECT authority binds a destination, and every later name the
 * guest supplies on that connection (TLS SNI, HTTP Host, HTTP/2 :authority, an absolute URL) must name
 * the same destination after normalisation. Pure; a mismatch is reported, never repaired.
 */
import { parseAbsoluteUrl, parseAuthority, parseHost, type Destination } from './destination.js';

export type IdentityField = 'sni' | 'host' | 'authority' | 'url';

export type IdentityCheck =
  | { readonly kind: 'same' }
  | { readonly kind: 'mismatch'; readonly field: IdentityField; readonly claimed: string };

const SAME: IdentityCheck = { kind: 'same' };

function sameHost(bound: Destination, other: Destination | { kind: 'name'; host: string } | { kind: 'ip'; ip: string }): boolean {
  if (bound.kind === 'name') return other.kind === 'name' && other.host === bound.host;
  return other.kind === 'ip' && other.ip === bound.ip;
}

/**
 * SNI must equal the CONNECT host. An IP CONNECT may carry no SNI or (against RFC 6066, as some
 * clients do) that same IP, never a name (a second identity); a name CONNECT without SNI keeps its name.
 */
export function checkSni(bound: Destination, sni: string | null): IdentityCheck {
  if (sni === null) return SAME;
  // Some clients (Go's hey, for one) send `host:port` as the server name, `ip:port` for an IP URL.
  // It still names one destination, so it binds when both host and port are the bound ones.
  if (sni.includes(':')) {
    const parsed = parseAuthority(sni, null);
    if (parsed.kind === 'ok' && sameHost(bound, parsed.destination) && parsed.destination.port === bound.port) return SAME;
    return { kind: 'mismatch', field: 'sni', claimed: sni };
  }
  const host = parseHost(sni);
  if (host === null || !sameHost(bound, host)) return { kind: 'mismatch', field: 'sni', claimed: sni };
  return SAME;
}

/**
 * A Host header or :authority value against the bound destination. The host must match; a port, when
 * given, must match too (clients omit the scheme's default port). An absent value keeps the binding.
 */
export function checkAuthorityHeader(bound: Destination, raw: string | undefined, field: 'host' | 'authority'): IdentityCheck {
  if (raw === undefined || raw === '') return SAME;
  const explicitPort = raw.startsWith('[') ? raw.lastIndexOf(':') > raw.indexOf(']') : raw.includes(':');
  const parsed = parseAuthority(raw, bound.port);
  if (parsed.kind === 'invalid') return { kind: 'mismatch', field, claimed: raw };
  if (!sameHost(bound, parsed.destination)) return { kind: 'mismatch', field, claimed: raw };
  if (explicitPort && parsed.destination.port !== bound.port) return { kind: 'mismatch', field, claimed: raw };
  return SAME;
}

/** An absolute URL inside a tunnel or a plain request against the destination bound for it. */
export function checkUrlDestination(bound: Destination, url: Destination, raw: string): IdentityCheck {
  if (!sameHost(bound, url) || url.port !== bound.port) return { kind: 'mismatch', field: 'url', claimed: raw };
  return SAME;
}

/**
 * The path to request inside an intercepted flow: an origin-form target as sent, an absolute URL only
 * when it names the bound destination (its path then); null when it names another one.
 */
export function boundRequestPath(bound: Destination, target: string): string | null {
  if (target.startsWith('/') || target === '*') return target;
  const parsed = parseAbsoluteUrl(target, 'https');
  if (parsed.kind === 'invalid') return null;
  return checkUrlDestination(bound, parsed.destination, target).kind === 'same' ? parsed.path : null;
}
