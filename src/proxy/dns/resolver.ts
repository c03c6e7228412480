/**
 * The workspace resolver: forwards questions to the configured upstreams (retrying across them),
 * caches answers by TTL within floor/ceiling clamps in a capped LRU, and folds identical in-flight
 * questions into one upstream query. It also implements HostResolver for the egress proxy, so the
 * proxy's lookups share the workspace's upstreams and cache.
 * It never decides policy: callers decide on a name before asking for it.
 */
import type { Answer } from 'dns-packet';
import { MicroagentError } from '../../errors.js';
import { parseIpLiteral } from '../../policy/index.js';
import type { HostResolver } from '../resolver.js';
import { createExpiringCache } from './cache.js';
import { createAddressMemory, DEFAULT_MEMORY_LIMITS, type AddressMemory } from './memory.js';
import { systemUpstreams } from './resolvconf.js';
import { parseUpstream, type UpstreamAddress } from './upstream-address.js';
import { exchangeWithUpstream, openUpstream, type Upstream, type UpstreamReply } from './upstream.js';
import type { UdpPoolOptions } from './udp-pool.js';
import { RCODE } from './wire.js';

export interface CacheLimits {
  /** Seconds; answers with shorter TTLs are kept this long. */
  readonly minTtl: number;
  /** Seconds; answers with longer TTLs are dropped after this long. */
  readonly maxTtl: number;
  readonly maxEntries: number;
}

export interface WorkspaceResolverOptions {
  /** `host:port` (or `[v6]:port`); default: the nameservers in /etc/resolv.conf. */
  readonly upstreams?: readonly string[];
  /** Per attempt. */
  readonly timeoutMs?: number;
  /** Further attempts after the first, each on the next upstream. */
  readonly retries?: number;
  readonly cache?: Partial<CacheLimits>;
  /** UDP sockets kept per upstream and queries per socket before a new random port. */
  readonly udpPool?: UdpPoolOptions;
  /** Injectable clock (ms) for cache and memory expiry in tests. */
  readonly now?: () => number;
}

/** One upstream answer as cached: immutable, so callers may memoise work keyed on its identity. */
export interface UpstreamAnswer {
  /** The upstream's rcode (NOERROR, NXDOMAIN, SERVFAIL, ...). */
  readonly rcode: number;
  readonly answers: readonly Answer[];
  /** Kept for negative answers: the SOA tells the client how long to remember the absence. */
  readonly authorities: readonly Answer[];
}

export interface ResolvedAnswer {
  readonly upstream: UpstreamAnswer;
  /** Seconds the answer stays valid from now (already clamped). */
  readonly ttl: number;
  readonly cached: boolean;
  /** Wall time of the upstream exchange, or null when served from cache. */
  readonly upstreamMs: number | null;
}

export interface WorkspaceResolver extends HostResolver {
  /**
   * Forwards one question (lowercased name, no trailing dot) through cache and coalescing. When the
   * question must go upstream (not cached, none in flight), `beforeForward` runs first and its
   * rejection stops it: the DNS server records the question durably there before it leaves the host.
   */
  query(name: string, qtype: number, beforeForward?: () => Promise<void>): Promise<ResolvedAnswer>;
  /** The cached answer, synchronously, or undefined (the hot path skips a promise on hits). */
  cached(name: string, qtype: number): ResolvedAnswer | undefined;
  /** What this workspace was given; the DNS server records into it after filtering answers. */
  readonly memory: AddressMemory;
  readonly upstreams: readonly UpstreamAddress[];
  /** Closes the sockets kept open to the upstreams (they never keep a process alive on their own). */
  close(): void;
}

export const DEFAULT_CACHE_LIMITS: CacheLimits = { minTtl: 1, maxTtl: 3600, maxEntries: 10_000 };
const NEGATIVE_TTL_WITHOUT_SOA = 30;


export function createWorkspaceResolver(options: WorkspaceResolverOptions = {}): WorkspaceResolver {
  const addresses = (options.upstreams ?? systemUpstreams()).map(parseUpstream);
  if (addresses.length === 0) {
    throw new MicroagentError('invalid', 'the workspace resolver needs at least one upstream resolver', {
      code: 'dns.no_upstream',
      remediation: 'pass --upstream ADDR, or leave it out to use the nameservers in /etc/resolv.conf',
    });
  }
  const upstreams = addresses.map((address) => openUpstream(address, options.udpPool));
  const timeoutMs = options.timeoutMs ?? 2000;
  const attempts = 1 + (options.retries ?? 1);
  const limits: CacheLimits = { ...DEFAULT_CACHE_LIMITS, ...options.cache };
  const now = options.now ?? Date.now;
  const cache = createExpiringCache<UpstreamAnswer>(limits.maxEntries, now);
  const inflight = new Map<string, Promise<ResolvedAnswer>>();
  const memory = createAddressMemory(DEFAULT_MEMORY_LIMITS, now);
  let nextUpstream = 0;

  async function forward(name: string, qtype: number, key: string, beforeForward?: () => Promise<void>): Promise<ResolvedAnswer> {
    await beforeForward?.();
    const started = performance.now();
    const { packet } = await exchangeWithRetries(name, qtype);
    const rcode = (packet.flags ?? 0) & 0xf;
    const upstreamAnswer: UpstreamAnswer = {
      rcode,
      answers: (packet.answers ?? []).filter((a) => a.type !== 'OPT'),
      authorities: (packet.authorities ?? []).filter((a) => a.type === 'SOA'),
    };
    const upstreamMs = performance.now() - started;
    const ttl = cacheTtl(upstreamAnswer, limits);
    if (ttl !== null && ttl > 0) cache.set(key, upstreamAnswer, ttl * 1000);
    return { upstream: upstreamAnswer, ttl: ttl ?? 0, cached: false, upstreamMs };
  }

  /**
   * Asks the upstreams in turn: a new attempt every timeoutMs (at once after every attempt so far has
   * failed), each waiting until the last one's deadline, so an answer to an earlier attempt that comes
   * late (a resolver taking 3 s against a 2 s timeout) still counts. The first answer wins.
   */
  function exchangeWithRetries(name: string, qtype: number): Promise<UpstreamReply> {
    return new Promise((resolve, reject) => {
      const deadline = performance.now() + attempts * timeoutMs;
      let launched = 0;
      let failed = 0;
      let settled = false;
      let next: NodeJS.Timeout | undefined;
      const launch = () => {
        clearTimeout(next);
        if (settled || launched === attempts) return;
        launched++;
        const upstream = upstreams[nextUpstream++ % upstreams.length] as Upstream;
        exchangeWithUpstream(upstream, name, qtype, Math.max(1, deadline - performance.now())).then(
          (reply) => {
            if (settled) return;
            settled = true;
            clearTimeout(next);
            resolve(reply);
          },
          (err: unknown) => {
            if (settled) return;
            if (++failed === attempts) {
              settled = true;
              reject(err);
            } else if (failed === launched) launch();
          },
        );
        if (launched < attempts) next = setTimeout(launch, timeoutMs);
      };
      launch();
    });
  }

  function cached(name: string, qtype: number): ResolvedAnswer | undefined {
    const hit = cache.get(`${name}|${qtype}`);
    if (hit === undefined) return undefined;
    return { upstream: hit.value, ttl: Math.max(0, Math.ceil((hit.expiresAt - now()) / 1000)), cached: true, upstreamMs: null };
  }

  async function query(name: string, qtype: number, beforeForward?: () => Promise<void>): Promise<ResolvedAnswer> {
    const hit = cached(name, qtype);
    if (hit !== undefined) return hit;
    const key = `${name}|${qtype}`;
    const running = inflight.get(key);
    if (running !== undefined) return running;
    const started = forward(name, qtype, key, beforeForward).finally(() => inflight.delete(key));
    inflight.set(key, started);
    return started;
  }

  return {
    query,
    cached,
    memory,
    upstreams: addresses,
    close() {
      for (const upstream of upstreams) upstream.udp.close();
    },
    // Answers are remembered under canonical addresses; callers may spell one differently.
    namesForAddress: (ip) => memory.namesForAddress(parseIpLiteral(ip) ?? ip),
    async lookup(host, beforeForward) {
      const ask = (qtype: number, name: 'A' | 'AAAA') => query(host, qtype, beforeForward && (() => beforeForward(name)));
      const results = await Promise.allSettled([ask(1, 'A'), ask(28, 'AAAA')]);
      const addresses: string[] = [];
      let failure: unknown = null;
      for (const result of results) {
        if (result.status === 'rejected') failure ??= result.reason;
        else for (const a of result.value.upstream.answers) if (a.type === 'A' || a.type === 'AAAA') addresses.push(a.data);
      }
      if (addresses.length === 0 && failure !== null) throw failure;
      return addresses;
    },
  };
}

/**
 * Seconds to cache an answer: its smallest record TTL, or for a negative answer the SOA's negative
 * TTL (RFC 2308), clamped to the limits. Null: not cacheable (SERVFAIL, REFUSED, ...).
 */
function cacheTtl(entry: UpstreamAnswer, limits: CacheLimits): number | null {
  let ttl: number;
  if (entry.rcode === RCODE.NOERROR && entry.answers.length > 0) {
    ttl = Math.min(...entry.answers.map((a) => sane('ttl' in a ? a.ttl : 0)));
  } else if (entry.rcode === RCODE.NOERROR || entry.rcode === RCODE.NXDOMAIN) {
    const soa = entry.authorities.find((a) => a.type === 'SOA');
    ttl = soa === undefined ? NEGATIVE_TTL_WITHOUT_SOA : Math.min(sane(soa.ttl), sane(soa.data.minimum));
  } else {
    return null;
  }
  return Math.min(limits.maxTtl, Math.max(limits.minTtl, ttl));
}

/** RFC 2181 8: a TTL with its top bit set is read as zero, not as 68 years. */
function sane(ttl: number | undefined): number {
  return ttl === undefined || ttl >= 2 ** 31 ? 0 : ttl;
}
