/**
 * A HostResolver backed by the host's own resolver (node:dns lookup: /etc/hosts, then DNS), for the
 * proxy running on its own without the workspace DNS resolver. It answers only lookups the proxy has
 * already decided to make; it knows nothing of what the guest resolved, so `namesForAddress` is empty.
 */
import { lookup } from 'node:dns/promises';
import { parseIpLiteral } from '../policy/index.js';
import type { HostResolver } from './resolver.js';

/**
 * getaddrinfo reports no TTL; answers are kept briefly so a busy plain-HTTP client does not pay a
 * thread-pool lookup per request. Safe for rebinding: every address is decided again per flow.
 */
const CACHE_MS = 5000;
const CACHE_MAX = 1024;

export function createSystemResolver(): HostResolver {
  const cache = new Map<string, { ips: readonly string[]; expires: number }>();
  return {
    async lookup(host, beforeForward) {
      const now = Date.now();
      const hit = cache.get(host);
      if (hit !== undefined && hit.expires > now) return hit.ips;
      // getaddrinfo may answer from /etc/hosts or a host cache, but cannot say so: count both questions as sent.
      if (beforeForward !== undefined) await Promise.all([beforeForward('A'), beforeForward('AAAA')]);
      const ips = await lookupAll(host);
      if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
      cache.set(host, { ips, expires: now + CACHE_MS });
      return ips;
    },
    namesForAddress(): readonly string[] {
      return [];
    },
  };
}

async function lookupAll(host: string): Promise<readonly string[]> {
  const answers = await lookup(host, { all: true, verbatim: true });
  const ips: string[] = [];
  for (const answer of answers) {
    const ip = parseIpLiteral(answer.address);
    if (ip !== null && !ips.includes(ip)) ips.push(ip);
  }
  // IPv4 first, as the HostResolver contract says.
  return ips.sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
}
