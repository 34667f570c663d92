/**
 * Where the ghost cache keeps what it learned: one small interface, a memory store
 * (stores/memory.ts) and, shared by every instance, Redis. Shaped after undici's
 * `CacheStore` (`types/cache-interceptor.d.ts`): entries found by their base key (method,
 * host, path, sorted query: key.ts) and told apart by the request fields their `Vary`
 * names; methods return `T | Promise<T>` so that memory stays synchronous.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { fieldOf } from './key.js'

/** One learned response. */
export interface GhostEntry {
  readonly status: number
  /** The response's own fields as they are to be replayed (no hop-by-hop ones). */
  readonly headers: Readonly<Record<string, string | readonly string[]>>
  readonly body: Buffer
  /** `Date.now()` when the response was received. */
  readonly receivedAt: number
  /** Its freshness lifetime and age at receipt (policy.ts `freshness()`). */
  readonly lifetimeMs: number
  readonly ageMs: number
  /** The request fields its `Vary` names (lower-case, sorted), and the values they had. */
  readonly vary: readonly string[]
  readonly varyValues: readonly string[]
  /** `no-cache`, `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale. */
  readonly staleForbidden: boolean
  /** Served no later than this (`Date.now()` scale): the route's `maxStale` past receipt. */
  readonly expiresAt: number
  /** The proxy route that learned it (its name), or `app` for the app's own answers; absent in entries of older versions. */
  readonly route?: string
}

/** What a listing shows of one entry (the admin API's list): never its body nor its fields. */
export interface GhostEntryInfo {
  readonly base: string
  readonly status: number
  readonly bytes: number
  readonly receivedAt: number
  readonly expiresAt: number
  /** The route that learned it (`GhostEntry.route`). */
  readonly route: string | undefined
  readonly lifetimeMs: number
  readonly ageMs: number
  /** The request fields its `Vary` names (their values are not shown). */
  readonly vary: readonly string[]
  readonly staleForbidden: boolean
}

/**
 * A store. `get` never throws nor rejects for a store that cannot answer (Redis down):
 * it has nothing to offer, and the request goes on as if nothing was learned.
 *
 * @example
 * store.set(base, entry)
 * store.get(base, req.headers) // the entry, when req's Vary'd fields match
 */
export interface GhostStore {
  /** The live entry of `base` whose `Vary`'d fields match `headers`. */
  get(base: string, headers: IncomingHttpHeaders): GhostEntry | undefined | Promise<GhostEntry | undefined>
  /**
   * Keep `entry` under `base` (replacing the variant with the same `Vary`'d values); `false`:
   * refused (too large). Rejects when the store cannot take it now (Redis down): nothing was
   * kept, through no fault of the entry's.
   */
  set(base: string, entry: GhostEntry): boolean | Promise<boolean>
  /** Forget every variant of `base`. */
  delete(base: string): void | Promise<void>
  /** Forget every entry whose base starts with `prefix`; how many bases went. */
  purge(prefix: string): number | Promise<number>
  /** What is held (live entries only). */
  list(): GhostEntryInfo[] | Promise<GhostEntryInfo[]>
  /** The base keys held (some may have just expired), in no order. Reads no entry. */
  keys(): string[] | Promise<string[]>
  /** What is held under `base` (its live variants). */
  info(base: string): GhostEntryInfo[] | Promise<GhostEntryInfo[]>
  /** What a store held in this process holds (entries, bytes): the memory store's gauges. */
  stats?(): { readonly entries: number; readonly bytes: number }
  close(): void | Promise<void>
}

/**
 * Most variants of one URL a store holds (its `Vary`'d values): past it, one goes for each
 * new one. A client cycling a `Vary`'d field (`User-Agent`) must not make a URL's entry
 * grow, nor each lookup of it scan more.
 */
export const MAX_VARIANTS = 32

/** The request's values of the fields `vary` names, as `fullKey()` reads them. */
const varyValuesOf = (vary: readonly string[], headers: IncomingHttpHeaders): string[] =>
  vary.map((name) => fieldOf(headers, name))

/** Whether `entry` answers a request with these fields: the same values for every field its `Vary` names. */
export function matches(entry: GhostEntry, headers: IncomingHttpHeaders): boolean {
  const values = varyValuesOf(entry.vary, headers)
  return values.length === entry.varyValues.length && values.every((v, i) => v === entry.varyValues[i])
}

/** What an entry weighs in a store's byte bound: its body and its fields, plus a fixed overhead. */
export function entryBytes(entry: GhostEntry): number {
  let n = entry.body.length + 64
  for (const [name, value] of Object.entries(entry.headers))
    n += name.length + (typeof value === 'string' ? value.length : value.reduce((s, v) => s + v.length, 0))
  return n
}

/** How `list()` shows an entry of `base`. */
export const infoOf = (base: string, e: GhostEntry): GhostEntryInfo => ({
  base,
  status: e.status,
  bytes: entryBytes(e),
  receivedAt: e.receivedAt,
  expiresAt: e.expiresAt,
  route: e.route,
  lifetimeMs: e.lifetimeMs,
  ageMs: e.ageMs,
  vary: e.vary,
  staleForbidden: e.staleForbidden,
})
