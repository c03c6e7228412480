/**
 * Upstream resolver addresses as operators write them (`--upstream`, `--dns-upstream`, resolv.conf):
 * parsed and checked here, without the DNS client, so a workspace's options are checked when it is
 * created and not first when its resolver starts.
 */
import { isIP, isIPv6 } from 'node:net';
import { MicroagentError } from '../../errors.js';

export interface UpstreamAddress {
  readonly host: string;
  readonly port: number;
}

/** Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address; port null when absent. */
export function splitHostPort(raw: string): { host: string; port: number | null } | null {
  const bracketed = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(raw);
  if (bracketed !== null) return { host: bracketed[1] as string, port: bracketed[2] === undefined ? null : Number(bracketed[2]) };
  if (isIPv6(raw)) return { host: raw, port: null };
  const plain = /^([^:[\]]+)(?::(\d{1,5}))?$/.exec(raw);
  if (plain === null) return null;
  return { host: plain[1] as string, port: plain[2] === undefined ? null : Number(plain[2]) };
}

/** Parses an upstream resolver address: `ip:port`, `[v6]:port`, or a bare IP address (port 53). */
export function parseUpstream(raw: string): UpstreamAddress {
  const split = splitHostPort(raw);
  const port = split?.port ?? 53;
  // An IP address: a name would be looked up through the host's own resolver, outside the policy.
  if (split === null || isIP(split.host) === 0 || port < 1 || port > 65535) {
    throw new MicroagentError('invalid', `upstream resolver "${raw}" is not an IP address with an optional port`, {
      code: 'dns.upstream_invalid',
      remediation: 'give upstreams as 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53',
    });
  }
  return { host: split.host, port };
}
