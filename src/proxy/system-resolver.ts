/**
 * A HostResolver backed by the host's own resolver (node:dns lookup: /etc/hosts, then DNS), for the
 * proxy running on its own without the workspace DNS resolver. It answers only lookups the proxy has
 * already decided to make; it knows nothing of what the guest resolved, so `namesForAddress` is empty.
 */
import { lookup } from 'node:dns/promises';
import { parseIpLiteral } from '../policy/index.js';
import type { HostResolver } from './resolver.js';

export function createSystemResolver(): HostResolver {
  return {
    async lookup(host: string): Promise<readonly string[]> {
      const answers = await lookup(host, { all: true, verbatim: true });
      const ips: string[] = [];
      for (const answer of answers) {
        const ip = parseIpLiteral(answer.address);
        if (ip !== null && !ips.includes(ip)) ips.push(ip);
      }
      // IPv4 first, as the HostResolver contract says.
      return ips.sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
    },
    namesForAddress(): readonly string[] {
      return [];
    },
  };
}
