import type { IncomingHttpHeaders } from 'node:http'
import { LRUCache } from 'lru-cache'
import {
  entryBytes,
  infoOf,
  matches,
  MAX_VARIANTS,
  type GhostEntry,
  type GhostEntryInfo,
  type GhostStore,
} from '../store.js'

/** Bounds of the memory store. */
export interface MemoryStoreOptions {
  /** Most variants held (default 10,000). */
  readonly maxEntries?: number
  /** Most bytes of bodies and fields held (default 64 MiB). */
  readonly maxBytes?: number
  /** Largest entry kept (default 1 MiB); larger ones are refused. */
  readonly maxEntryBytes?: number
}

const sameValues = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((v, i) => v === b[i])

/**
 * The memory store: least recently used first out, bounded by entries and by bytes
 * (lru-cache's `max` and `maxSize`), entries past their `expiresAt` dropped when met
 * (no timer), like undici's memory cache store.
 *
 * @example
 * const store = createMemoryStore({ maxBytes: 32 * 1024 * 1024 })
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): GhostStore {
  const maxEntryBytes = options.maxEntryBytes ?? 1024 * 1024
  // One LRU item per base key: its variants (one per set of Vary'd values), sized together.
  // Each entry's weight, computed once (set() needs it, and so does the size of its URL's item).
  const weights = new WeakMap<GhostEntry, number>()
  const weightOf = (e: GhostEntry): number => {
    let w = weights.get(e)
    if (w === undefined) weights.set(e, (w = entryBytes(e)))
    return w
  }
  const cache = new LRUCache<string, GhostEntry[]>({
    max: options.maxEntries ?? 10_000,
    maxSize: options.maxBytes ?? 64 * 1024 * 1024,
    sizeCalculation: (variants) =>
      Math.max(
        1,
        variants.reduce((s, e) => s + weightOf(e), 0),
      ),
  })
  /** The live variants of `base` (expired ones dropped as they are met). */
  const live = (base: string, now: number): GhostEntry[] | undefined => {
    const variants = cache.get(base)
    if (variants === undefined) return undefined
    const kept = variants.filter((e) => e.expiresAt > now)
    if (kept.length === variants.length) return variants
    if (kept.length === 0) cache.delete(base)
    else cache.set(base, kept)
    return kept
  }
  return {
    get(base: string, headers: IncomingHttpHeaders) {
      const variants = live(base, Date.now())
      return variants?.find((e) => matches(e, headers))
    },
    set(base, entry) {
      if (weightOf(entry) > maxEntryBytes) return false
      const others = (live(base, Date.now()) ?? []).filter(
        (e) => !(sameValues(e.vary, entry.vary) && sameValues(e.varyValues, entry.varyValues)),
      )
      // Bounded: the oldest learned variants go first (they are kept in the order learned).
      cache.set(base, [...others.slice(Math.max(0, others.length - MAX_VARIANTS + 1)), entry])
      return cache.has(base)
    },
    delete(base) {
      cache.delete(base)
    },
    purge(prefix) {
      let n = 0
      for (const base of [...cache.keys()])
        if (base.startsWith(prefix)) {
          cache.delete(base)
          n++
        }
      return n
    },
    list() {
      const now = Date.now()
      const out: GhostEntryInfo[] = []
      for (const base of [...cache.keys()]) for (const e of live(base, now) ?? []) out.push(infoOf(base, e))
      return out
    },
    keys: () => [...cache.keys()],
    info: (base) => (live(base, Date.now()) ?? []).map((e) => infoOf(base, e)),
    stats: () => ({ entries: cache.size, bytes: cache.calculatedSize }),
    close() {
      cache.clear()
    },
  }
}
