/**
 * The ghost cache as an engine: it learns the good answers of proxy routes at the
 * gateway's response tap and those of the app at its response (capture.ts), and
 * answers from them at once when the upstream fails — refused, reset, timed out, a
 * 5xx of the route's list, its breaker open, no host healthy — or when the app throws
 * or answers 5xx. nginx's `proxy_cache_use_stale error timeout http_500 …`, with
 * the breaker in front so that a hung upstream is not waited for request after request.
 * On proxy routes it may also answer before forwarding: fresh entries (`serveFresh`, an
 * RFC 9111 shared cache) and, while one request refreshes a key, stale ones to the others
 * (`staleWhileRevalidate`).
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Engine, UpstreamFailure } from '../kernel/engine.js'
import { AegisArgumentError } from '../kernel/errors.js'
import type { EventBus } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import type { AdmittedState } from '../kernel/types.js'
import { normalizeTarget, pathOf } from '../kernel/url.js'
import type { Metrics } from '../metrics/index.js'
import type { RedisConnection } from '../store/index.js'
import type { ProxyRouteConfig } from '../gateway/options.js'
import { answeredByAegis, silence, unsilence } from '../node/response.js'
import { captureResponse, type Decision } from './capture.js'
// The events' declaration merging reaches the bundled .d.ts through this module (see scripts/dts-augmentations.mjs).
import './events.js'
import { logGhostEvents } from './events.js'
import { invalidated, keyOf, learner, routeGhost, type RouteGhost } from './learn.js'
import { ghostMetrics, type GhostMetrics } from './metrics.js'
import { settingsOf, type GhostConfig } from './options.js'
import { ageMs, ageOf, writeEntry, type ServeKind } from './serve.js'
import type { GhostEntry, GhostEntryInfo, GhostStore } from './store.js'
export type { GhostEntryInfo } from './store.js'
import { createMemoryStore } from './stores/memory.js'
import { createRedisStore } from './stores/redis.js'
import { sharedCache } from './shared-cache.js'
import { createTemplates, pathOfBase, type TemplateStats } from './templates.js'

/** What `ghost.purge()` forgets. */
export type GhostPurge =
  | { readonly key: string }
  | { readonly prefix: string }
  | { readonly template: string }
  | { readonly route: string }
  | { readonly all: true }

/** What `ghost.entries()` is asked. */
export interface GhostEntriesOptions {
  /** Most entries in the page, 1 to 1,000 (default 100); a URL's variants are never split across pages. */
  readonly limit?: number
  /** Where the page starts: the `next` of the page before (opaque). */
  readonly cursor?: string
  /** Only the entries this route learned (a proxy route's name, or `app`). */
  readonly route?: string
  /** Only the entries whose key starts with this (`GET api.example.com/users/`). */
  readonly prefix?: string
}

/**
 * One entry, as `ghost.entries()` shows it: plain JSON, never its body, its fields or the
 * values of the request fields it varies on. Times are ISO 8601.
 */
export interface GhostEntryView {
  /** Its key: method, host, path and sorted query (`GET api.example.com/users/1`); what `purge({ key })` takes. */
  readonly key: string
  /** Learned for one credential (`credentials: true`): the credential's hash is never shown. */
  readonly scoped: boolean
  /** The proxy route that learned it, `app` for the app's own answers, `null` for entries of older versions. */
  readonly route: string | null
  readonly status: number
  /** What it weighs in the store's byte bound (body and fields). */
  readonly bytes: number
  /** The request fields its `Vary` names. */
  readonly vary: string[]
  readonly receivedAt: string
  /** Its age now, in seconds (RFC 9111 §4.2.3: the age it arrived with, plus the time held). */
  readonly ageSeconds: number
  /** Fresh (within its lifetime) now; else it is stale, served only when the upstream fails. */
  readonly fresh: boolean
  readonly freshUntil: string
  /** Never served stale (`no-cache`, `must-revalidate`, `proxy-revalidate`, `s-maxage`), unless the route ignores it. */
  readonly staleForbidden: boolean
  /** Served no later than this (its route's `maxStale` past its lifetime). */
  readonly expiresAt: string
}

/** One page of `ghost.entries()`. */
export interface GhostEntriesPage {
  readonly entries: GhostEntryView[]
  /** The cursor of the next page, or `null`: this was the last. */
  readonly next: string | null
}

/** The ghost cache's entry points (`aegis.ghost`): what the admin API calls. */
export interface GhostApi {
  /**
   * Forget entries: one URL's (`key`, as `entries()` shows it), every one under a key
   * prefix, every one of a route template (`/users/:id`, as `templates()` shows it), every
   * one a route learned (`route`), or all of them (`{ all: true }`). How many URLs (base
   * keys) went. Emitted as `ghost.purged`. With the Redis store, shared by every instance.
   *
   * @example
   * await aegis.ghost.purge({ route: 'api' })
   * await aegis.ghost.purge({ all: true })
   */
  purge(what: GhostPurge): Promise<number>
  /**
   * What is held, a page at a time, in key order: each entry's key, route, status, size, age
   * and freshness — never a body, a field or a credential. Throws `AegisArgumentError` on a
   * bad option or cursor.
   *
   * @example
   * let page = await aegis.ghost.entries({ limit: 50, route: 'api' })
   * while (page.next !== null) page = await aegis.ghost.entries({ limit: 50, route: 'api', cursor: page.next })
   */
  entries(options?: GhostEntriesOptions): Promise<GhostEntriesPage>
  /** What is held: base key, status, size, when learned and until when it may be served. */
  list(): Promise<GhostEntryInfo[]>
  /** The route templates: per template, what was learned, served and refused (and why). */
  templates(): TemplateStats[]
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

/** The `reason` label of a serve: what failed. */
const reasonOf = (failure: UpstreamFailure): string =>
  failure.status === 504 ? 'timeout' : failure.status === 503 ? 'unavailable' : 'error'

type PurgeBy = 'key' | 'prefix' | 'template' | 'route' | 'all'

/** What `purge()` was asked: exactly one of `key`, `prefix`, `template`, `route` (a non-empty string) or `all: true`. */
function purgeOf(what: unknown): [PurgeBy, string] {
  const given = typeof what === 'object' && what !== null ? Object.entries(what) : []
  const [by, value] = given[0] ?? []
  if (
    given.length !== 1 ||
    (by !== 'key' && by !== 'prefix' && by !== 'template' && by !== 'route' && by !== 'all')
  )
    throw new AegisArgumentError(
      'ghost.purge() takes exactly one of { key }, { prefix }, { template }, { route } or { all: true }',
    )
  if (by === 'all') {
    if (value !== true) throw new AegisArgumentError('ghost.purge({ all }) takes true')
    return [by, '']
  }
  if (typeof value !== 'string' || value === '')
    throw new AegisArgumentError(`ghost.purge({ ${by} }) takes a non-empty string`)
  return [by, value]
}

/** A credential-scoped entry's key holds a hash of the credential after this. */
const CREDENTIAL = '\ncredential: '

/** The key `entries()` shows for a stored base: up to the first line break (a credential's hash never shows). */
const shownKey = (base: string): string => {
  const nl = base.indexOf('\n')
  return nl < 0 ? base : base.slice(0, nl)
}

const iso = (ms: number): string => new Date(Math.min(ms, 8.64e15)).toISOString()

/** How `entries()` shows one entry. */
function viewOf(info: GhostEntryInfo, now: number): GhostEntryView {
  const age = info.ageMs + now - info.receivedAt
  return {
    key: shownKey(info.base),
    scoped: info.base.includes(CREDENTIAL),
    route: info.route ?? null,
    status: info.status,
    bytes: info.bytes,
    vary: [...info.vary],
    receivedAt: iso(info.receivedAt),
    ageSeconds: Math.max(0, Math.floor(age / 1000)),
    fresh: age < info.lifetimeMs,
    freshUntil: iso(info.receivedAt + Math.max(0, info.lifetimeMs - info.ageMs)),
    staleForbidden: info.staleForbidden,
    expiresAt: iso(info.expiresAt),
  }
}

const encodeCursor = (base: string): string => Buffer.from(base).toString('base64url')
function decodeCursor(cursor: unknown): string | undefined {
  if (cursor === undefined) return undefined
  if (typeof cursor !== 'string' || cursor === '' || !/^[A-Za-z0-9_-]+$/.test(cursor))
    throw new AegisArgumentError('ghost.entries(): cursor is the `next` of a page')
  return Buffer.from(cursor, 'base64url').toString()
}

const CAPTURED = Symbol('aegis.ghost.captured')
type Captured = IncomingMessage & { [CAPTURED]?: boolean }

/** Siblings tried, nearest first, for an unseen URL in `synthesize` mode. */
const SIBLINGS_TRIED = 3

type Found = GhostEntry | undefined | Promise<GhostEntry | undefined>

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
      ? createRedisStore(deps.conn, { maxEntryBytes, maxEntries: top.maxEntries })
      : createMemoryStore({
          maxEntryBytes,
          ...(top === false ? {} : { maxEntries: top.maxEntries, maxBytes: top.maxBytes }),
        })
  const metrics: GhostMetrics | undefined =
    deps.metrics === undefined ? undefined : ghostMetrics(deps.metrics)
  const offLog = deps.logger === undefined ? undefined : logGhostEvents(events, deps.logger)
  const templates = createTemplates()
  // Targets' templates, remembered (a serve asks again for each request): cleared when learning
  // may have changed them, or when past their bound.
  let templateCache = new Map<string, string>()
  const templateOf = (target: string): string => {
    let template = templateCache.get(target)
    if (template === undefined) {
      if (templateCache.size >= 1000) templateCache = new Map()
      template = templates.templateOf(pathOf(normalizeTarget(target)))
      templateCache.set(target, template)
    }
    return template
  }
  const appSettings = top === false || !top.app ? undefined : settingsOf(undefined, top)
  const app = appSettings === undefined ? undefined : routeGhost('app', appSettings, undefined)

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

  // A request whose answer the app capture watches, and whether the gateway took it after all (an
  // Express or Koa proxy route mounted after Aegis): its answers are the gateway's to learn and stand
  // in for. A property of the request, set only where the capture is: no WeakSet entry per proxied
  // request for the collector to trace as an ephemeron.
  const markProxied = (req: IncomingMessage): void => {
    if ((req as Captured)[CAPTURED] === false) (req as Captured)[CAPTURED] = true
  }
  // Routes answering from the ghost now: told on the bus when that starts and when it ends.
  const serving = new Set<string>()
  const switched = (route: string, on: boolean, reason?: string): void => {
    if (on === serving.has(route)) return
    if (on) serving.add(route)
    else serving.delete(route)
    events.emit('ghost.serving', { route, serving: on, ...(reason === undefined ? {} : { reason }) })
  }

  const learn = learner(store, {
    refused(g, target, reason) {
      metrics?.refused(g.name, reason)
      templates.refused(templateOf(target), reason)
    },
    learned(g, target, key) {
      metrics?.learned(g.name)
      // A credential-scoped key is no sibling for anyone else.
      if (!key.includes('\n')) {
        templates.learned(templateOf(target), key)
        templateCache = new Map()
      }
      const held = store.stats?.()
      if (held !== undefined) metrics?.held(held.entries, held.bytes)
    },
    failed: (err) => deps.logger?.error({ err }, 'ghost store failed'),
  })

  /** `key`'s entry for these request fields; a store that throws has none. */
  const lookup = (key: string, headers: IncomingHttpHeaders): Found => {
    try {
      const found = store.get(key, headers)
      return found instanceof Promise ? found.catch(() => undefined) : found
    } catch {
      return undefined
    }
  }

  /** The nearest learned sibling of an unseen URL (`synthesize`), tried nearest first. */
  const sibling = (key: string, target: string, headers: IncomingHttpHeaders): Found => {
    const template = templateOf(target)
    const ranked = templates
      .ranked(template, key)
      .filter((k) => k !== key)
      .slice(0, SIBLINGS_TRIED)
    const next = (i: number): Found => {
      const k = ranked[i]
      if (k === undefined) return undefined
      const found = lookup(k, headers)
      const use = (e: GhostEntry | undefined): Found => {
        if (e !== undefined) return e
        templates.unlearned(template, k)
        return next(i + 1)
      }
      return found instanceof Promise ? found.then(use) : use(found)
    }
    return next(0)
  }

  /** Write `entry` as the answer to `req`; `clear`: the app's own fields go first. */
  function answer(
    req: IncomingMessage,
    res: ServerResponse,
    entry: GhostEntry,
    how: { kind: ServeKind; now: number; clear: boolean },
  ): void {
    // Aegis answered the app's throw with a 500 while the store was asked, and silenced the response.
    const silenced = answeredByAegis(res)
    if (silenced) unsilence(res)
    if (how.clear) {
      // The app's error answer had set its own fields: only Aegis' stay, under the entry's.
      for (const name of res.getHeaderNames()) res.removeHeader(name)
      for (const [name, value] of deps.stateOf(req)?.headers ?? []) res.appendHeader(name, value)
    }
    writeEntry(res, entry, req.headers, { head: req.method === 'HEAD', kind: how.kind, now: how.now })
    // The app may still hold `res` (a timer of its own): its late calls must not throw.
    if (silenced) silence(res, entry.status)
  }

  /**
   * Answer a failed `req` on `res` from what was learned: `true` when it did. Never past the
   * entry's `maxStale`; never stale against `no-cache`, `must-revalidate`, `proxy-revalidate`
   * or `s-maxage` unless the route says `ignoreRevalidate`. An unseen URL may get its
   * nearest learned sibling in `synthesize` mode.
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
    const key = keyOf(req, target, g)
    const serve = (entry: GhostEntry | undefined, synthesized: boolean): boolean => {
      if (entry === undefined || res.destroyed || res.headersSent) return false
      const now = Date.now()
      if (entry.expiresAt <= now) return false
      const stale = ageMs(entry, now) >= entry.lifetimeMs
      if (stale && entry.staleForbidden && !g.settings.ignoreRevalidate) return false
      answer(req, res, entry, { kind: synthesized ? 'synthesized' : 'stale-if-error', now, clear })
      metrics?.served(g.name, reason, ageOf(entry, now))
      if (events.has('ghost.served'))
        events.emit('ghost.served', { route: g.name, reason: synthesized ? 'synthesized' : reason })
      templates.served(templateOf(target), synthesized ? 'synthesized' : reason)
      switched(g.name, true, reason)
      return true
    }
    const orSibling = (entry: GhostEntry | undefined): boolean | Promise<boolean> => {
      if (entry !== undefined || g.settings.synthesize === false) return serve(entry, false)
      const near = sibling(key, target, req.headers)
      return near instanceof Promise ? near.then((e) => serve(e, true)) : serve(near, true)
    }
    const found = lookup(key, req.headers)
    return found instanceof Promise ? found.then(orSibling) : orSibling(found)
  }

  const shared = sharedCache({ store, metrics, lookup, answer, targetOf: deps.targetOf })

  /** Forget what an unsafe request changed. */
  const invalidate = (keys: readonly string[]): void => {
    for (const key of keys)
      try {
        void Promise.resolve(store.delete(key)).catch(() => undefined)
      } catch {
        // A store that cannot forget now has nothing to offer either.
      }
  }

  return {
    name: 'ghost',
    api: {
      store,
      async purge(what) {
        const [by, value] = purgeOf(what)
        let count: number
        if (by === 'key') {
          await store.delete(value)
          // The copies learned for each credential live under the key and a hash of it.
          count = 1 + (await store.purge(`${value}\n`))
        } else if (by === 'prefix' || by === 'all') {
          count = await store.purge(value)
        } else if (by === 'route') {
          count = 0
          for (const base of await store.keys())
            if ((await store.info(base)).some((e) => e.route === value)) {
              await store.delete(base)
              count++
            }
        } else {
          const bases = [...new Set((await store.list()).map((e) => e.base))].filter(
            (base) => templates.templateOf(pathOfBase(base)) === value,
          )
          for (const base of bases) {
            await store.delete(base)
            templates.unlearned(value, base)
          }
          count = bases.length
        }
        events.emit('ghost.purged', { by, value, count })
        return count
      },
      list: async () => store.list(),
      async entries(options = {}) {
        if (typeof options !== 'object' || options === null)
          throw new AegisArgumentError('ghost.entries() takes an object: { limit, cursor, route, prefix }')
        const { limit = 100, route, prefix } = options
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
          throw new AegisArgumentError('ghost.entries(): limit is an integer from 1 to 1000')
        for (const [name, v] of [
          ['route', route],
          ['prefix', prefix],
        ] as const)
          if (v !== undefined && typeof v !== 'string')
            throw new AegisArgumentError(`ghost.entries(): ${name} is a string`)
        const after = decodeCursor(options.cursor)
        const bases = (await store.keys())
          .filter((b) => (after === undefined || b > after) && (prefix === undefined || b.startsWith(prefix)))
          .sort()
        const now = Date.now()
        const entries: GhostEntryView[] = []
        for (let i = 0; i < bases.length; i++) {
          const base = bases[i] as string
          for (const info of await store.info(base))
            if (route === undefined || info.route === route) entries.push(viewOf(info, now))
          if (entries.length >= limit)
            return { entries, next: i + 1 < bases.length ? encodeCursor(base) : null }
        }
        return { entries, next: null }
      },
      templates: () => templates.stats(),
    },
    upstream: {
      onRequest(req, res, request) {
        markProxied(req)
        if (req.method !== 'GET' && req.method !== 'HEAD') return false
        const g = ghostOf(request.config as ProxyRouteConfig, request.route)
        if (g === undefined || (!g.settings.serveFresh && g.settings.staleWhileRevalidate === 0)) return false
        return shared.beforeForward(req, res, g)
      },
      onResponse(req, response) {
        markProxied(req)
        const g = ghostOf(response.config as ProxyRouteConfig, response.route)
        if (g === undefined) return undefined
        if (response.status < 500) switched(g.name, false)
        const target = deps.targetOf(req)
        if (req.method !== 'GET' && req.method !== 'HEAD')
          return void invalidate(invalidated(req, target, response.status, response.headers))
        return learn(req, target, response.status, response.headers, g)
      },
      onFailure(req, res, failure) {
        markProxied(req)
        const g = ghostOf(failure.config as ProxyRouteConfig, failure.route)
        if (g === undefined) return false
        return standIn(req, res, deps.targetOf(req), g, reasonOf(failure), false)
      },
      replace(req, res, response) {
        markProxied(req)
        const g = ghostOf(response.config as ProxyRouteConfig, response.route)
        if (g === undefined) return false
        if (response.status === 304) return shared.revalidated(req, res, response.headers, g)
        // An upstream's own 5xx stands in only when the route lists its status.
        if (!g.statuses.has(response.status)) return false
        return standIn(req, res, deps.targetOf(req), g, 'status', false)
      },
    },
    ...(app !== undefined && {
      respond: (req: IncomingMessage, res: ServerResponse) => {
        if (req.method !== 'GET' && req.method !== 'HEAD') return
        const target = deps.targetOf(req)
        ;(req as Captured)[CAPTURED] = false
        captureResponse(res, {
          decide(status: number, headers: OutgoingHttpHeaders): Decision {
            if ((req as Captured)[CAPTURED] === true) return 'pass'
            if (app.statuses.has(status)) return 'hold'
            if (status < 500) switched(app.name, false)
            // Aegis' own fields (a client's RateLimit, Server-Timing) are the current request's, never replayed.
            const own = deps.stateOf(req)?.headers ?? []
            const fields = { ...(headers as IncomingHttpHeaders) }
            for (const [name] of own) delete fields[name.toLowerCase()]
            return learn(req, target, status, fields, app) ?? 'pass'
          },
          standIn: () => standIn(req, res, target, app, 'status', true),
        })
      },
    }),
    async close() {
      offLog?.()
      metrics?.close()
      shared.clear()
      await store.close()
    },
  }
}
