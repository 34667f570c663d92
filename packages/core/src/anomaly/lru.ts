/**
 * A least-recently-used map of at most `max` entries whose memory grows with its entries.
 * lru-cache allocates its arrays for `max` entries up front: for the engine's 100,000 clients
 * and as many blocks, four arrays of 100,000 pointers that every full garbage collection
 * walks, however few clients there are. This one starts small and doubles (re-inserting the
 * entries least recent first, so the order is kept); it evicts only once `max` is reached,
 * as one cache of `max` would.
 */
import { LRUCache } from 'lru-cache'

/** Entries a growing map starts with room for. */
const INITIAL = 1024

export class GrowingLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>> {
  private cache: LRUCache<K, V>
  private bound: number

  /**
   * @example
   * const blocks = new GrowingLru<string, Block>(100_000)
   */
  constructor(
    readonly max: number,
    private readonly dispose?: (value: V, key: K) => void,
  ) {
    this.bound = Math.min(max, INITIAL)
    this.cache = this.create()
  }

  private create(): LRUCache<K, V> {
    return new LRUCache<K, V>(
      this.dispose === undefined ? { max: this.bound } : { max: this.bound, dispose: this.dispose },
    )
  }

  get size(): number {
    return this.cache.size
  }
  /** The value of `key`, which becomes the most recently used. */
  get(key: K): V | undefined {
    return this.cache.get(key)
  }
  /** The value of `key`, its recency untouched. */
  peek(key: K): V | undefined {
    return this.cache.peek(key)
  }
  set(key: K, value: V): void {
    if (this.cache.size >= this.bound && this.bound < this.max && !this.cache.has(key)) {
      const old = this.cache
      this.bound = Math.min(this.max, this.bound * 2)
      this.cache = this.create()
      // Least recent first: the last one set is the most recent, as it was. No disposal.
      for (const [k, v] of old.rentries() as Generator<[K, V]>) this.cache.set(k, v)
    }
    this.cache.set(key, value)
  }
  delete(key: K): boolean {
    return this.cache.delete(key)
  }
  /** Entries, most recently used first. */
  entries(): Generator<[K, V]> {
    return this.cache.entries()
  }
  values(): Generator<V> {
    return this.cache.values()
  }
}
