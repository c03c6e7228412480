/**
 * Mediation targets: where a channel's guest connections are relayed to on the host. A target is a
 * TCP `host:port` (IPv4 literal, `[IPv6]:port` or a DNS name) or an absolute Unix socket path.
 * Parsing is strict and pure; this file never opens a socket and never accepts a relative path (a
 * relative path would silently depend on the broker's working directory).
 */

export type MediationTarget =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

export type TargetParse = { readonly ok: true; readonly target: MediationTarget } | { readonly ok: false; readonly problem: string };

/** sun_path is 108 bytes on Linux, one of them the terminating NUL. */
export const MAX_UNIX_PATH_BYTES = 107;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
const PORT = /^[1-9]\d{0,4}$/;
/** socat's and docker's spellings (`tcp:host:port`, `unix:/path`) and URLs, written out of habit. */
const SCHEME_PREFIX = /^(tcp[46]?|unix|https?):(?!\d+$)/i;

export function parseTarget(text: string): TargetParse {
  if (text.length === 0) return { ok: false, problem: 'is empty' };
  if (text.startsWith('/')) return parseUnixPath(text);
  const scheme = SCHEME_PREFIX.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') return { ok: false, problem: `"${text}" is a URL: give the HOST:PORT its server listens on` };
  if (scheme !== undefined) return { ok: false, problem: `"${text}": drop the "${scheme}:" prefix (HOST:PORT is TCP, /abs/path.sock is a Unix socket)` };
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return { ok: false, problem: `"${text}" is not [IPv6]:port` };
    const host = canonicalIpv6(text.slice(1, close));
    if (host === null) return { ok: false, problem: `"${text.slice(1, close)}" is not an IPv6 address` };
    return withPort(host, text.slice(close + 2), text);
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) {
    return { ok: false, problem: `"${text}" is neither host:port nor an absolute Unix socket path` };
  }
  const host = text.slice(0, colon);
  if (host.includes(':')) return { ok: false, problem: `"${text}": write an IPv6 target as [address]:port` };
  if (!IPV4.test(host) && !isHostName(host)) return { ok: false, problem: `"${host}" is not an IPv4 address or host name` };
  return withPort(host.toLowerCase(), text.slice(colon + 1), text);
}

/** The canonical text of a target, as audit records and readiness reports show it. */
export function formatTarget(target: MediationTarget): string {
  switch (target.kind) {
    case 'unix':
      return target.path;
    case 'tcp':
      return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
    default:
      return unreachable(target);
  }
}

function parseUnixPath(path: string): TargetParse {
  if (path.includes('\0')) return { ok: false, problem: 'a Unix socket path cannot contain NUL' };
  if (path.endsWith('/')) return { ok: false, problem: `"${path}" names a directory, not a socket` };
  if (Buffer.byteLength(path) > MAX_UNIX_PATH_BYTES) {
    return { ok: false, problem: `"${path}" is longer than ${MAX_UNIX_PATH_BYTES} bytes (the Unix socket path limit)` };
  }
  return { ok: true, target: { kind: 'unix', path } };
}

function withPort(host: string, portText: string, whole: string): TargetParse {
  const port = Number(portText);
  if (!PORT.test(portText) || port > 65535) return { ok: false, problem: `"${whole}" needs a TCP port from 1 to 65535` };
  return { ok: true, target: { kind: 'tcp', host, port } };
}

function isHostName(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  const labels = host.split('.');
  // An all-numeric dotted name that failed the IPv4 test is an address trick (127.1, 0x7f.1), not a name.
  if (labels.every((l) => /^[0-9a-fx]+$/i.test(l)) && labels.some((l) => /^\d/.test(l))) return false;
  return labels.every((l) => HOST_LABEL.test(l));
}

function canonicalIpv6(host: string): string | null {
  // URL does the strict RFC 4291 parse and compresses zeros; a zone id (%eth0) is refused.
  if (!/^[0-9a-f:.]+$/i.test(host)) return null;
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

function unreachable(value: never): never {
  throw new Error(`unexpected target ${JSON.stringify(value)}`);
}
