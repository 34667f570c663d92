/**
 * The ghost cache's options: the top-level `ghost` (the store, and what every proxy
 * route and the app's own routes start from) and a proxy route's own `ghost`, laid
 * over it. Off unless set: answering stale is the operator's choice, as nginx's
 * `proxy_cache_use_stale` is.
 */
import { z } from 'zod'

/** Statuses a route may learn besides 200 and 203, when it opts in. */
const LEARNABLE = [200, 203, 301, 308, 404, 410] as const

/** What a proxy route may set of its own (the top-level `ghost` sets the same, for every route). */
const routeFields = {
  /**
   * Seconds past its freshness that a learned answer may still stand in for a failure
   * (RFC 5861's `stale-if-error` window, set by the operator). One hour by default: long
   * enough to ride out a deploy gone wrong or a database restart, short enough that a
   * page a day old is never passed off as current.
   */
  maxStale: z
    .int()
    .min(1)
    .max(30 * 86_400),
  /**
   * Seconds an answer without explicit freshness (no `max-age`, `s-maxage` or
   * `Expires`) counts as fresh: nginx's `proxy_cache_valid`; `maxStale` runs from its end.
   * 10 s by default: short, as the origin said nothing.
   */
  ttl: z
    .int()
    .min(0)
    .max(30 * 86_400),
  /** Upstream (or app) statuses answered from the ghost instead (nginx's `http_500 http_502 …`). */
  statuses: z.array(z.int().min(500).max(599)).max(100),
  /** Statuses learned: 200 and 203 by default; 301, 308, 404 and 410 when listed. */
  learn: z
    .array(z.union(LEARNABLE.map((s) => z.literal(s))))
    .min(1)
    .max(LEARNABLE.length),
  /**
   * Learn answers to requests with `Authorization` or `Cookie` too, each keyed to a hash
   * of the credential: served only to a request with the very same credential.
   */
  credentials: z.boolean(),
  /**
   * Serve stale even against `no-cache`, `must-revalidate`, `proxy-revalidate` and
   * `s-maxage` (RFC 9111 §4.2.4 forbids it): for an origin whose headers say more than it means.
   */
  ignoreRevalidate: z.boolean(),
  /** Largest body learned, in bytes: a longer answer is forwarded, never kept. */
  maxEntryBytes: z
    .int()
    .min(1)
    .max(64 * 1024 * 1024),
  /**
   * Serve fresh entries too, before forwarding, as an RFC 9111 shared cache (proxy routes):
   * within their freshness, honouring the request's `no-cache`, `max-age` and `min-fresh`.
   */
  serveFresh: z.boolean(),
  /**
   * Seconds past freshness during which a request for a key another request is already
   * fetching gets the stale entry at once instead of joining the stampede (nginx's
   * `proxy_cache_use_stale updating`, `proxy_cache_lock`): one upstream request per key at a
   * time. An answer's own `stale-while-revalidate` directive (RFC 5861) wins. 0: off.
   */
  staleWhileRevalidate: z.int().min(0).max(86_400),
  /**
   * With `serveFresh`: in the last this many seconds of an entry's freshness, one request
   * for it (one at a time) goes upstream and refreshes it while the others still get the
   * fresh entry — so an entry in demand never goes stale while its upstream is healthy,
   * and one nobody asks for costs nothing. 0: off.
   */
  refreshAhead: z.int().min(0).max(86_400),
  /**
   * For a URL never learned whose template (`/users/:id`) was, answer the nearest learned
   * sibling, marked `X-Aegis-Ghost: synthesized`. For staging and demos: refused when
   * `NODE_ENV` is `production` unless `'force'`.
   */
  synthesize: z.union([z.boolean(), z.literal('force')]),
}

/** A route's settings, every one filled in. */
export type GhostSettings = { -readonly [K in keyof typeof routeFields]: z.output<(typeof routeFields)[K]> }

const DEFAULTS: Readonly<GhostSettings> = {
  maxStale: 3600,
  ttl: 10,
  statuses: [500, 502, 503, 504],
  learn: [200, 203],
  credentials: false,
  ignoreRevalidate: false,
  maxEntryBytes: 1024 * 1024,
  serveFresh: false,
  staleWhileRevalidate: 0,
  refreshAhead: 0,
  synthesize: false,
}

const routeSettings = z.strictObject(routeFields).partial()

/** A proxy route's `ghost`: `false` opts it out, `true` or an object opts it in (over the top-level one). */
export const routeGhostSchema = z.union([z.boolean(), routeSettings]).optional()

/** The top-level `ghost`: the route settings every proxy route inherits, plus the store and the app's routes. */
const topSettings = z.strictObject({
  maxStale: routeFields.maxStale.default(DEFAULTS.maxStale),
  ttl: routeFields.ttl.default(DEFAULTS.ttl),
  statuses: routeFields.statuses.default(DEFAULTS.statuses),
  learn: routeFields.learn.default(DEFAULTS.learn),
  credentials: routeFields.credentials.default(DEFAULTS.credentials),
  ignoreRevalidate: routeFields.ignoreRevalidate.default(DEFAULTS.ignoreRevalidate),
  maxEntryBytes: routeFields.maxEntryBytes.default(DEFAULTS.maxEntryBytes),
  serveFresh: routeFields.serveFresh.default(DEFAULTS.serveFresh),
  staleWhileRevalidate: routeFields.staleWhileRevalidate.default(DEFAULTS.staleWhileRevalidate),
  refreshAhead: routeFields.refreshAhead.default(DEFAULTS.refreshAhead),
  synthesize: routeFields.synthesize.default(DEFAULTS.synthesize),
  /**
   * Where entries are kept: `'memory'` (this process; the default) or `'redis'` (the
   * `store` option's Redis or Cluster, shared by every instance).
   */
  store: z.enum(['memory', 'redis']).default('memory'),
  /** The memory store's bounds: entries and bytes (bodies and fields) held, least recently used out first. */
  maxEntries: z.int().min(1).max(10_000_000).default(10_000),
  maxBytes: z
    .int()
    .min(1024)
    .max(64 * 1024 * 1024 * 1024)
    .default(64 * 1024 * 1024),
  /** Learn from and stand in for the app's own GET routes too (not only proxy routes). */
  app: z.boolean().default(true),
})

/**
 * The top-level `ghost` option: `true` for the defaults, an object to tune them, `false`
 * (the default) for none.
 *
 * @example
 * ghostSection.parse(true) // { store: 'memory', maxEntries: 10000, …, app: true }
 */
export const ghostSection = z
  .union([z.boolean(), topSettings])
  .default(false)
  .transform((v) => (v === true ? topSettings.parse({}) : v))

export type GhostOptions = z.input<typeof ghostSection>
/** The top-level `ghost` as parsed. */
export type GhostConfig = z.output<typeof ghostSection>

/**
 * The settings in force on a route: its own `ghost` over the top-level one over the
 * defaults; `undefined` when the route has none (it opted out, or nothing turned it on).
 *
 * @example
 * settingsOf({ maxStale: 60 }, false) // { maxStale: 60, ttl: 10, statuses: [500, 502, 503, 504], … }
 */
export function settingsOf(
  route: z.output<typeof routeGhostSchema>,
  top: GhostConfig,
): Readonly<GhostSettings> | undefined {
  if (route === false || (route === undefined && top === false)) return undefined
  type Given = { readonly [K in keyof GhostSettings]?: GhostSettings[K] | undefined }
  const own: Given = typeof route === 'object' ? route : {}
  const inherited: Given = top === false ? {} : top
  const merged: GhostSettings = { ...DEFAULTS }
  for (const key of Object.keys(DEFAULTS) as (keyof GhostSettings)[]) {
    const value = own[key] ?? inherited[key]
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value
  }
  return merged
}
