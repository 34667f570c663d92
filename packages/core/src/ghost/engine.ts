/**
 * The ghost cache as an engine: it learns the good answers of proxy routes at the
 * gateway's response tap and those of the app at its response (capture.ts), and
 * answers from them at once when the upstream fails — refused, reset, timed out, a
 * 5xx of the route's list, its breaker open, no host healthy — or when the app throws
 * or answers 5xx. nginx's `proxy_cache_use_stale error timeout http_500 …`, with
 * the breaker in front so that a hung upstream is not waited for request after request.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { BodyTap, Engine, UpstreamFailure } from '../kernel/engine.js'
import type { EventBus } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import type { AdmittedState } from '../kernel/types.js'
import type { Metrics } from '../metrics/index.js'
import type { RedisConnection } from '../store/index.js'
import type { ProxyRouteConfig } from '../gateway/options.js'
import { answeredByAegis, silence, unsilence } from '../node/response.js'
import { parseCacheControl } from './cache-control.js'
import { captureResponse, type Decision } from './capture.js'
// The events' declaration merging reaches the bundled .d.ts through this module (see scripts/dts-augmentations.mjs).
import './events.js'
import { logGhostEvents } from './events.js'
import { baseKey, fieldOf, fullKey } from './key.js'
import { ghostMetrics, type GhostMetrics } from './metrics.js'
import { settingsOf, type GhostConfig, type GhostSettings } from './options.js'
import { freshness, refusal, staleForbidden, varyNames } from './policy.js'
import { keptHeaders, writeEntry, ageOf } from './serve.js'
import type { GhostEntry, GhostEntryInfo, GhostStore } from './store.js'
import { createMemoryStore } from './stores/memory.js'
import { createRedisStore } from './stores/redis.js'

/** The ghost cache's entry points (`aegis.ghost`): what the admin API calls. */
export interface GhostApi {
  /** Forget entries: one URL's (`key`: a base key as `list()` shows it), or every one under a prefix. */
  purge(what: { readonly key: string } | { readonly prefix: string }): Promise<number>
  /** What is held: base key, status, size, when learned and until when it may be served. */
  list(): Promise<GhostEntryInfo[]>
  readonly store: GhostStore
}

/** What the ghost engine is built from. */
export interface GhostDeps {
  readonly top: GhostConfig
  readonly routes: readonly ProxyRouteConfig[]
  readonly conn: RedisConnection | undefined
  readonly metrics: Metrics | undefined
  readonly logger: Logger | undefined
  readonly events: EventBus
  readonly stateOf: (req: IncomingMessage) => AdmittedState | undefined
  /** The request target as the client sent it, where Aegis is mounted (`EngineContext.targetOf`). */
  readonly targetOf: (req: IncomingMessage) => string
}

/** One route's settings, with the sets its checks read. */
interface RouteGhost {
  readonly name: string
  readonly settings: Readonly<GhostSettings>
  readonly statuses: ReadonlySet<number>
  readonly learn: ReadonlySet<number>
  /** The route's request-id field: it belongs to one exchange and is never kept. */
  readonly requestId: string | undefined
}

const routeGhost = (
  name: string,
  settings: Readonly<GhostSettings>,
  requestId: string | undefined,
): RouteGhost => ({
  name,
  settings,
  statuses: new Set(settings.statuses),
  learn: new Set(settings.learn),
  requestId,
})

/** The `reason` label of a serve: what failed. */
const reasonOf = (failure: UpstreamFailure): string =>
  failure.rejection === undefined
    ? 'status'
    : failure.status === 504
      ? 'timeout'
      : failure.status === 503
        ? 'unavailable'
        : 'error'

const EXPLICIT = ['max-age', 's-maxage']

/**
 * The ghost engine, or `undefined` when neither the top-level `ghost` nor any proxy
 * route turns it on.
 *
 * @example
 * const engine = ghostEngine({ top: config.ghost, routes: config.proxy, … })
 */
export function ghostEngine(deps: GhostDeps): (Engine & { readonly api: GhostApi }) | undefined {
  const { top, events } = deps
  const on = deps.routes.filter((r) => settingsOf(r.ghost, top) !== undefined)
  if (top === false && on.length === 0) return undefined
  const largest = Math.max(
    ...[top === false ? undefined : top, ...on.map((r) => settingsOf(r.ghost, top))].map(
      (s) => s?.maxEntryBytes ?? 1024 * 1024,
    ),
  )
  // Headroom for the fields over the largest body a route learns.
  const maxEntryBytes = largest + 64 * 1024
  const store: GhostStore =
    top !== false && top.store === 'redis' && deps.conn !== undefined
      ? createRedisStore(deps.conn, { maxEntryBytes })
      : createMemoryStore({
          maxEntryBytes,
          ...(top === false ? {} : { maxEntries: top.maxEntries, maxBytes: top.maxBytes }),
        })
  const metrics: GhostMetrics | undefined =
    deps.metrics === undefined ? undefined : ghostMetrics(deps.metrics)
  const offLog = deps.logger === undefined ? undefined : logGhostEvents(events, deps.logger)
  const app =
    top === false || !top.app ? undefined : routeGhost('app', settingsOf(undefined, top)!, undefined)

  // Per route config (routes added by `proxy()` included), resolved once.
  const byConfig = new WeakMap<ProxyRouteConfig, RouteGhost | null>()
  const ghostOf = (config: ProxyRouteConfig, name: string): RouteGhost | undefined => {
    let g = byConfig.get(config)
    if (g === undefined) {
      const settings = settingsOf(config.ghost, top)
      g =
        settings === undefined
          ? null
          : routeGhost(name, settings, config.requestId === false ? undefined : config.requestId)
      byConfig.set(config, g)
    }
    return g ?? undefined
  }

  // Requests the gateway took: their answers are its to learn and to stand in for, not the app capture's.
  const proxied = new WeakSet<IncomingMessage>()
  // Routes answering from the ghost now: told on the bus when that starts and when it ends.
  const serving = new Set<string>()
  const switched = (route: string, on: boolean, reason?: string): void => {
    if (on === serving.has(route)) return
    if (on) serving.add(route)
    else serving.delete(route)
    events.emit('ghost.serving', { route, serving: on, ...(reason === undefined ? {} : { reason }) })
  }

  /** The key an entry of this request lives under (its credential's hash too, where the route keys on it). */
  const keyOf = (req: IncomingMessage, target: string, g: RouteGhost): string => {
    const base = baseKey(req.method ?? 'GET', req.headers.host, target)
    return g.settings.credentials &&
      (req.headers.authorization !== undefined || req.headers.cookie !== undefined)
      ? fullKey(base, [], req.headers, true)
      : base
  }

  const refused = (g: RouteGhost, reason: string): undefined => {
    metrics?.refused(g.name, reason)
    return undefined
  }

  /** A tap that keeps `req`'s answer if it may be learned and fits; `undefined` when it may not. */
  function learner(
    req: IncomingMessage,
    target: string,
    status: number,
    headers: IncomingHttpHeaders,
    g: RouteGhost,
  ): BodyTap | undefined {
    // A HEAD's answer has no body to give a GET; a HEAD is answered from a GET's entry.
    if (req.method !== 'GET') return undefined
    const why = refusal(req, status, headers, { statuses: g.learn, credentialed: g.settings.credentials })
    if (why !== undefined) return why === 'method' || why === 'status' ? undefined : refused(g, why)
    const max = g.settings.maxEntryBytes
    if (Number(headers['content-length']) > max) return refused(g, 'too-large')
    const key = keyOf(req, target, g)
    const vary = varyNames(headers.vary) as readonly string[]
    const varyValues = vary.map((name) => fieldOf(req.headers, name))
    const receivedAt = Date.now()
    const chunks: Buffer[] = []
    let size = 0
    return {
      chunk(data) {
        if (size > max) return
        size += data.length
        if (size > max) chunks.length = 0
        else chunks.push(data)
      },
      end(complete) {
        if (!complete) return void refused(g, 'incomplete')
        if (size > max) return void refused(g, 'too-large')
        const cc = parseCacheControl(headers['cache-control'])
        const fresh = freshness(headers, receivedAt)
        const explicit = EXPLICIT.some((d) => cc.has(d)) || headers.expires !== undefined
        const lifetimeMs = explicit ? fresh.lifetimeMs : g.settings.ttl * 1000
        const entry: GhostEntry = {
          status,
          headers: keptHeaders(headers, g.requestId),
          body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size),
          receivedAt,
          lifetimeMs,
          ageMs: fresh.ageMs,
          vary,
          varyValues,
          staleForbidden: staleForbidden(cc),
          expiresAt: receivedAt + Math.max(0, lifetimeMs - fresh.ageMs) + g.settings.maxStale * 1000,
        }
        const kept = (ok: boolean): void => {
          if (!ok) return void refused(g, 'too-large')
          metrics?.learned(g.name)
          const held = store.stats?.()
          if (held !== undefined) metrics?.held(held.entries, held.bytes)
        }
        try {
          const stored = store.set(key, entry)
          if (typeof stored === 'boolean') kept(stored)
          else stored.then(kept, () => undefined)
        } catch (err) {
          deps.logger?.error({ err }, 'ghost store refused an entry')
        }
      },
    }
  }

  /**
   * Answer `req` on `res` from what was learned: `true` when it did. Never past the
   * entry's `maxStale`; never stale against `no-cache`, `must-revalidate`,
   * `proxy-revalidate` or `s-maxage` unless the route says `ignoreRevalidate`.
   */
  function standIn(
    req: IncomingMessage,
    res: ServerResponse,
    target: string,
    g: RouteGhost,
    reason: string,
    clear: boolean,
  ): boolean | Promise<boolean> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    let found: GhostEntry | undefined | Promise<GhostEntry | undefined>
    try {
      found = store.get(keyOf(req, target, g), req.headers)
    } catch {
      return false
    }
    const answer = (entry: GhostEntry | undefined): boolean => {
      if (entry === undefined || res.destroyed || res.headersSent) return false
      const now = Date.now()
      if (entry.expiresAt <= now) return false
      const stale = entry.ageMs + now - entry.receivedAt >= entry.lifetimeMs
      if (stale && entry.staleForbidden && !g.settings.ignoreRevalidate) return false
      // Aegis answered the app's throw with a 500 while the store was asked, and silenced the response.
      const silenced = answeredByAegis(res)
      if (silenced) unsilence(res)
      if (clear) {
        // The app's error answer had set its own fields: only Aegis' stay, under the entry's.
        for (const name of res.getHeaderNames()) res.removeHeader(name)
        for (const [name, value] of deps.stateOf(req)?.headers ?? []) res.appendHeader(name, value)
      }
      writeEntry(res, entry, req.headers, { head: req.method === 'HEAD', kind: 'stale-if-error', now })
      // The app may still hold `res` (a timer of its own): its late calls must not throw.
      if (silenced) silence(res, entry.status)
      metrics?.served(g.name, reason, ageOf(entry, now))
      switched(g.name, true, reason)
      return true
    }
    return found instanceof Promise ? found.then(answer, () => false) : answer(found)
  }

  return {
    name: 'ghost',
    api: {
      store,
      async purge(what) {
        let count = 1
        if ('key' in what) await store.delete(what.key)
        else count = await store.purge(what.prefix)
        const [by, value] = 'key' in what ? (['key', what.key] as const) : (['prefix', what.prefix] as const)
        events.emit('ghost.purged', { by, value, count })
        return count
      },
      list: async () => store.list(),
    },
    upstream: {
      onResponse(req, response) {
        proxied.add(req)
        const g = ghostOf(response.config as ProxyRouteConfig, response.route)
        if (g === undefined) return undefined
        if (response.status < 500) switched(g.name, false)
        return learner(req, deps.targetOf(req), response.status, response.headers, g)
      },
      onFailure(req, res, failure) {
        proxied.add(req)
        const g = ghostOf(failure.config as ProxyRouteConfig, failure.route)
        if (g === undefined) return false
        // An upstream's own 5xx stands in only when the route lists its status.
        if (failure.rejection === undefined && !g.statuses.has(failure.status)) return false
        return standIn(req, res, deps.targetOf(req), g, reasonOf(failure), false)
      },
    },
    ...(app !== undefined && {
      respond: (req: IncomingMessage, res: ServerResponse) => {
        if (req.method !== 'GET' && req.method !== 'HEAD') return
        const target = deps.targetOf(req)
        captureResponse(res, {
          decide(status: number, headers: OutgoingHttpHeaders): Decision {
            if (proxied.has(req)) return 'pass'
            if (app.statuses.has(status)) return 'hold'
            if (status < 500) switched(app.name, false)
            return learner(req, target, status, headers as IncomingHttpHeaders, app) ?? 'pass'
          },
          standIn: () => standIn(req, res, target, app, 'status', true),
        })
      },
    }),
    async close() {
      offLog?.()
      metrics?.close()
      await store.close()
    },
  }
}
