/**
 * The host's default upstream resolvers, read from resolv.conf when the caller names none.
 * Read once when a workspace resolver is created, never per query.
 */
import { readFileSync } from 'node:fs';
import { MicroagentError } from '../../errors.js';

/** `nameserver` addresses from resolv.conf text, as `host:53` / `[v6]:53` (scoped v6 addresses skipped). */
export function nameserversFromResolvConf(text: string): string[] {
  const servers: string[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    const address = match?.[1];
    if (address === undefined || address.includes('%')) continue;
    servers.push(address.includes(':') ? `[${address}]:53` : `${address}:53`);
  }
  return servers;
}

export function systemUpstreams(path = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new MicroagentError('not_found', `cannot read ${path} to find upstream resolvers`, {
      code: 'dns.no_upstream',
      remediation: 'name the upstream resolvers explicitly (--upstream 192.0.2.53:53)',
      cause,
    });
  }
  const servers = nameserversFromResolvConf(text);
  if (servers.length === 0) {
    throw new MicroagentError('not_found', `${path} names no nameserver`, {
      code: 'dns.no_upstream',
      remediation: 'name the upstream resolvers explicitly (--upstream 192.0.2.53:53)',
    });
  }
  return servers;
}
