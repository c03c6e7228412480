/**
 * What one workspace was told by its resolver: which names it was given each address for (so the
 * egress proxy can recognise a connection to an address the guest learned from DNS), and which names
 * it has seen resolve to public addresses (so a later internal answer is recognised as rebinding).
 * Bounded: capped entries, capped names per address, all expiring. It must never report an expired
 * answer, and it holds only what the workspace was actually given (after filtering), never raw upstream data.
 */
import { createExpiringCache } from './cache.js';

export interface AddressMemory {
  /** Records that the workspace was given `ip` for `name`, valid for `ttlMs`. */
  recordAddress(name: string, ip: string, ttlMs: number): void;
  /** Records that `name` resolved to a public address. */
  recordPublic(name: string): void;
  namesForAddress(ip: string): readonly string[];
  seenPublic(name: string): boolean;
}

export interface AddressMemoryLimits {
  readonly maxAddresses: number;
  readonly maxNamesPerAddress: number;
  /** How long a public answer is remembered for rebinding detection. */
  readonly publicMemoryMs: number;
}

export const DEFAULT_MEMORY_LIMITS: AddressMemoryLimits = {
  maxAddresses: 10_000,
  maxNamesPerAddress: 32,
  publicMemoryMs: 3_600_000,
};

export function createAddressMemory(limits: AddressMemoryLimits, now: () => number = Date.now): AddressMemory {
  const byAddress = createExpiringCache<Map<string, number>>(limits.maxAddresses, now);
  const publicNames = createExpiringCache<true>(limits.maxAddresses, now);
  const liveNames = (names: Map<string, number>, at: number): string[] => {
    const live: string[] = [];
    for (const [name, expiresAt] of names) {
      if (expiresAt > at) live.push(name);
      else names.delete(name);
    }
    return live;
  };
  return {
    recordAddress(name, ip, ttlMs) {
      const at = now();
      const names = byAddress.get(ip)?.value ?? new Map<string, number>();
      names.delete(name);
      names.set(name, at + ttlMs);
      // A CDN address can front thousands of names: keep the most recent ones.
      while (names.size > limits.maxNamesPerAddress) {
        const oldest = names.keys().next();
        if (oldest.done === true) break;
        names.delete(oldest.value);
      }
      let latest = 0;
      for (const expiresAt of names.values()) latest = Math.max(latest, expiresAt);
      byAddress.set(ip, names, latest - at);
    },
    recordPublic(name) {
      publicNames.set(name, true, limits.publicMemoryMs);
    },
    namesForAddress(ip) {
      const entry = byAddress.get(ip);
      return entry === undefined ? [] : liveNames(entry.value, now());
    },
    seenPublic(name) {
      return publicNames.get(name) !== undefined;
    },
  };
}
