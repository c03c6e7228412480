/**
 * A bounded cache whose entries expire: the resolver's answer cache and its address memory.
 * Eviction is CLOCK (second chance), an LRU approximation: a hit only sets a flag, so the hot path
 * never reorders the Map; when the cap is reached, the oldest entries are evicted unless used since
 * they were last passed over. Guest-chosen names can never grow it past the cap, and it never
 * returns an expired entry. The clock is injectable for tests.
 */

export interface ExpiringCache<V> {
  /** The live entry and its expiry (ms since epoch on the cache's clock), or undefined. */
  get(key: string): { readonly value: V; readonly expiresAt: number } | undefined;
  set(key: string, value: V, ttlMs: number): void;
  delete(key: string): void;
  readonly size: number;
}

interface Slot<V> {
  value: V;
  expiresAt: number;
  used: boolean;
}

export function createExpiringCache<V>(maxEntries: number, now: () => number = Date.now): ExpiringCache<V> {
  const entries = new Map<string, Slot<V>>();
  const evictOne = () => {
    // Each pass either evicts or clears one flag, so this ends within 2 * size steps.
    for (const [key, slot] of entries) {
      entries.delete(key);
      if (!slot.used || slot.expiresAt <= now()) return;
      slot.used = false;
      entries.set(key, slot);
    }
  };
  return {
    get(key) {
      const slot = entries.get(key);
      if (slot === undefined) return undefined;
      if (slot.expiresAt <= now()) {
        entries.delete(key);
        return undefined;
      }
      slot.used = true;
      return slot;
    },
    set(key, value, ttlMs) {
      const existing = entries.get(key);
      if (existing !== undefined) {
        existing.value = value;
        existing.expiresAt = now() + ttlMs;
        existing.used = true;
        return;
      }
      while (entries.size >= maxEntries && entries.size > 0) evictOne();
      entries.set(key, { value, expiresAt: now() + ttlMs, used: false });
    },
    delete(key) {
      entries.delete(key);
    },
    get size() {
      return entries.size;
    },
  };
}
