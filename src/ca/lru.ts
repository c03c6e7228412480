/**
 * A bounded least-recently-used map whose entries also expire at a fixed time.
 * It holds values keyed by names the proxy already authorised; the cap exists because even
 * authorised names can be many (a guest crawling), and an unbounded map would be a memory leak.
 * It never calls back into its owner and never does IO.
 */
interface Entry<V> {
  readonly value: V;
  readonly expiresAt: number;
}

export class ExpiringLru<K, V> {
  // A Map iterates in insertion order: re-inserting on every hit keeps the oldest entry first.
  private readonly entries = new Map<K, Entry<V>>();
  evictions = 0;

  constructor(
    private readonly capacity: number,
    private readonly now: () => number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`LRU capacity must be a positive integer, got ${capacity}`);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: K): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.entries.delete(key);
    if (entry.expiresAt <= this.now()) return undefined;
    this.entries.set(key, entry);
    return entry.value;
  }

  set(key: K, value: V, expiresAt: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt });
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
      this.evictions++;
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
