/**
 * A bounded cache whose entries expire: the resolver's answer cache and its address memory.
 * Least recently used entries go first when the cap is reached, so guest-chosen names can never grow
 * it without bound. It must never return an expired entry. The clock is injectable for tests.
 */

export interface ExpiringCache<V> {
  /** The live entry and its expiry (ms since epoch on the cache's clock), or undefined. */
  get(key: string): { readonly value: V; readonly expiresAt: number } | undefined;
  set(key: string, value: V, ttlMs: number): void;
  delete(key: string): void;
  readonly size: number;
}

export function createExpiringCache<V>(maxEntries: number, now: () => number = Date.now): ExpiringCache<V> {
  const entries = new Map<string, { value: V; expiresAt: number }>();
  return {
    get(key) {
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      if (entry.expiresAt <= now()) {
        entries.delete(key);
        return undefined;
      }
      // Re-inserting moves the key to the end of Map order, which is the recency order.
      entries.delete(key);
      entries.set(key, entry);
      return entry;
    },
    set(key, value, ttlMs) {
      entries.delete(key);
      entries.set(key, { value, expiresAt: now() + ttlMs });
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next();
        if (oldest.done === true) break;
        entries.delete(oldest.value);
      }
    },
    delete(key) {
      entries.delete(key);
    },
    get size() {
      return entries.size;
    },
  };
}
