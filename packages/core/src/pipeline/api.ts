/** The public shape of an Aegis instance and of what adapters tell it. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AdminApi } from '../admin/engine.js'
import type { AuditTrail } from '../audit/index.js'
import type { Gateway, ProxyRoute, ProxyRouteOptions } from '../gateway/index.js'
import type { GatewayAdmin } from '../gateway/engine.js'
import type { HttpServer } from '../http-server/index.js'
import type { Endpoint } from '../kernel/engine.js'
import type { EventBus } from '../kernel/events.js'
import type { AegisRequestState, Rejection, RouteOf } from '../kernel/types.js'
import type { GhostApi } from '../ghost/engine.js'
import type { AnomalyApi } from '../anomaly/engine.js'
import type { HistoryApi } from '../history/engine.js'
import type { Limiter } from '../limiter/index.js'
import type { Metrics } from '../metrics/index.js'
import type { AegisConfig, AegisOptions } from '../options/index.js'
import type { ConfigIssue } from '../kernel/errors.js'
import type { PatchOperation } from '../reload/diff.js'
import type { ReloadSource } from '../reload/events.js'
import type { RedisConnection } from '../store/index.js'
import type { RouteSchemas, RouteValidator } from '../validator/route-schema.js'
import type { Dispatched, Forwarder } from './admission.js'

export type { Dispatched, Forwarder } from './admission.js'

/** How an adapter tells the pipeline about its framework. */
export interface AdapterHooks {
  /** The matched route template of a finished request, if the framework knows it. */
  routeOf?: RouteOf
  /**
   * Keep each request's state in a WeakMap instead of a property of the request.
   * For Express, which re-prototypes every request: each of its request objects
   * has a hidden class of its own, so a property added to one costs V8 a new map.
   */
  stateBesideRequest?: boolean
  /**
   * A request's own response, where the framework links it (Express' `req.res`). With
   * `stateBesideRequest` the state must not hold it: a WeakMap value that leads back to
   * its key (state → res → res.req) is an ephemeron cycle V8's collector pays for on every
   * request (measured: +8–10 µs a request on Express, bench/spread.mjs).
   */
  responseOf?: (req: IncomingMessage) => ServerResponse | undefined
  /**
   * Shape the requests of each server the requests arrive from
   * (`shapeRequests()` in node/shape.ts), starting at its first request, for
   * apps that never call `attach()`. Only the servers not attached: `attach()`
   * says for its own. Stopped by `close()` or when the server closes.
   */
  shapeServers?: boolean
  /**
   * The request target the guards must see, where the framework rewrote `req.url`
   * (Express strips a mount path): `undefined` when `req.url` is it. Guards read it
   * during admission only; the app and the gateway keep what the framework gave them.
   */
  wholeTarget?: (req: IncomingMessage) => string | undefined
  /**
   * The framework routes proxy prefixes and endpoints itself and cannot add routes once it
   * listens (Fastify): a reload that adds a proxy prefix or moves the admin mount is refused.
   */
  sealedRoutes?: boolean
}

/** Who asks for a reload, for the `config.reloaded` / `config.refused` events and the audit trail. */
export interface ReloadOptions {
  /** `'code'` unless told: `'api'` (the admin API), `'file'` (a watched file), `'signal'` (SIGHUP). */
  source?: ReloadSource
  /** Who: the admin token's name, a user. */
  actor?: string
  /** The file the options came from. */
  file?: string
}

/** What `validateConfig()` says of options: their errors by path, or the change they would make. */
export type ValidateResult =
  | {
      readonly ok: true
      /** Whether anything differs from the configuration in force (functions by reference). */
      readonly changed: boolean
      /** Content hashes of the configuration in force and of the one checked (`configHash`). */
      readonly before: string
      readonly after: string
      /** RFC 6902 from the configuration in force to the one checked, secrets redacted. */
      readonly diff: readonly PatchOperation[]
    }
  | { readonly ok: false; readonly errors: readonly ConfigIssue[] }

/** What `reload()` did: the new generation and its diff, or the errors it was refused for. */
export type ReloadResult =
  | {
      readonly ok: true
      /** `false`: the options were those in force; nothing was rebuilt, the generation stays. */
      readonly changed: boolean
      /** The generation in force now. */
      readonly generation: number
      readonly before: string
      readonly after: string
      readonly diff: readonly PatchOperation[]
    }
  | {
      readonly ok: false
      /** The generation still in force. */
      readonly generation: number
      readonly errors: readonly ConfigIssue[]
    }

/**
 * The framework-agnostic Aegis instance. Adapters call `admit` once per request,
 * write what it says, and call `track` so `observe` runs when the response ends.
 */
export interface Aegis {
  /** The configuration in force (a reload replaces it). */
  readonly config: AegisConfig
  /** The configuration's generation: 1 at start, one more at each reload applied. */
  readonly generation: number
  /**
   * Run the guards. Returns the request's state: `state.rejection` set means
   * answer that instead of calling the app; `state.headers` go on the response
   * either way. Calling it again for the same request returns the same state
   * (a request is admitted once, however it is mounted). A promise when a
   * shared store (Redis) decides; synchronous otherwise. Never throws: a user
   * callback that fails makes a 500 rejection.
   */
  admit(req: IncomingMessage): AegisRequestState | Promise<AegisRequestState>
  /**
   * The whole per-request flow: admit (once, however mounted), track, write the
   * admitted headers, then serve an endpoint (metrics) or forward through a proxy
   * route (`via`, else the `proxy` option's routes) when one owns `url` (default
   * `req.url`; `body`: what a body parser already read). Resolves (or returns) the
   * state when the adapter is to write `state.rejection` or, without one, call the
   * app; `undefined` when Aegis answered itself. Never throws or rejects.
   *
   * @example
   * const done = aegis.dispatch(req, res)
   */
  dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    url?: string,
    body?: unknown,
    via?: Forwarder,
  ): Dispatched | Promise<Dispatched>
  /** `dispatch` without serving: admit, track, write the admitted headers (for frameworks that route endpoints themselves). */
  guard(req: IncomingMessage, res: ServerResponse): AegisRequestState | Promise<AegisRequestState>
  /**
   * A `node:http` request listener: Aegis in front of `app` (a `(req, res)` listener), or
   * alone (a 404 problem for what no endpoint or proxy route takes). Rejections are
   * written as problem+json; an `app` that throws or rejects before answering gets a 500
   * problem (Aegis' headers only), one that fails mid-answer a closed connection, one that
   * fails after answering nothing more — never an uncaught exception.
   *
   * @example
   * const server = http.createServer(aegis.handler(app))
   * aegis.attach(server)
   */
  handler(
    app?: (req: IncomingMessage, res: ServerResponse) => unknown,
  ): (req: IncomingMessage, res: ServerResponse) => void
  /** The paths Aegis serves before the app (the metrics exposition today). */
  readonly endpoints: readonly Endpoint[]
  /** The event bus: every engine's state changes (`events.on('upstream.breaker', …)`). */
  readonly events: EventBus
  /** The state of an admitted request, if any. */
  stateOf(req: IncomingMessage): AegisRequestState | undefined
  /** Set the admitted headers on a response (and drop `X-Powered-By`). */
  applyHeaders(res: ServerResponse, state: AegisRequestState): void
  /** Observe the response when it ends (finished or aborted). */
  track(req: IncomingMessage, res: ServerResponse): void
  /** Record what happened; `track` calls this for you. */
  observe(req: IncomingMessage, res: ServerResponse): void
  /** Compile a per-route zod validator (`shield.validate` in the adapters). */
  routeValidator(schemas: RouteSchemas): RouteValidator
  /** Count a rejection an adapter answered itself (route validation). */
  countRejection(rejection: Rejection): void
  /** Change the body limit of one request (a gateway route allowing larger uploads). */
  setBodyLimit(req: IncomingMessage, bytes: number): void
  /**
   * The Prometheus exposition, or `undefined` when metrics are off. Never
   * rejects: a failed scrape (a throwing collect() on a registry the app passed)
   * is a 500 problem (`status`).
   */
  scrapeMetrics(): Promise<{ status: number; contentType: string; body: string } | undefined>
  /** A `(req, res)` handler serving the metrics text. */
  readonly metricsHandler: (req: IncomingMessage, res: ServerResponse) => void
  /** The prom-client registry, when metrics are on: engines and apps may add their own. */
  readonly metrics: Metrics | undefined
  /** The rate limiter (penalty / reward / get / reset), when on. */
  readonly limiter: Limiter | undefined
  /** The ghost cache (purge, list), when the top-level `ghost` or a proxy route's turns it on. */
  readonly ghost: GhostApi | undefined
  /** The anomaly engine (`top()`, `explain()`, `block()`, `unblock()`, `stats()`), unless `anomaly: false`. */
  readonly anomaly: AnomalyApi | undefined
  /** The audit trail (upstream state changes, fault-injection switches), unless `audit: false`. */
  readonly audit: AuditTrail | undefined
  /** The admin API's listener, when `admin` is set. */
  readonly admin: AdminApi | undefined
  /**
   * The metrics history (`query()` over 10 minutes to 7 days, `live()`, `onSecond()`,
   * `runtime()`, `redis()`), when the `history` option turns it on.
   */
  readonly history: HistoryApi | undefined
  /** Aegis' own Redis connection, when a shared store is configured. */
  readonly store: RedisConnection | undefined
  /**
   * The proxy routes of the `proxy` option (longest prefix first, `routes`), and the
   * operator's view and controls over every route, `proxy()`'s included: `status()`,
   * `upstream()`, `drain()`, `enable()`, `forceBreaker()` (`GatewayAdmin`).
   */
  readonly gateway: Gateway & GatewayAdmin
  /**
   * One more proxy route (`shield.proxy()`): throws `AegisConfigError` on bad
   * options; `close()` closes its upstream pools. With `upgrades` (the default),
   * attached servers send it the WebSocket upgrades under its prefix, read from
   * the root of the path.
   */
  proxy(options: ProxyRouteOptions, use?: { upgrades?: boolean }): ProxyRoute
  /**
   * Take charge of an HTTP server: warn about missing timeouts, answer parser
   * errors with problem+json, and drain it gracefully on `close()`. With
   * `shapeRequests` (Express), give its requests one V8 layout each
   * (`shapeRequests()` in node/shape.ts) until `close()`; `false` stops the
   * shaping a first request started (`AdapterHooks.shapeServers`).
   */
  attach(server: HttpServer, options?: { drain?: boolean; shapeRequests?: boolean }): void
  /**
   * Check options as `reload()` would, without applying them: their errors by path (the
   * schema's, and sections that need a restart: `store`, `metrics`, `logger`), or the RFC
   * 6902 diff from the configuration in force (secrets redacted). Never throws.
   */
  validateConfig(options: AegisOptions): ValidateResult
  /**
   * Put new options in force without a restart. They are parsed and checked as at start; the
   * engines whose definition did not change are kept with their state (limiter counters,
   * breakers, health, ghost entries), the others built off to the side; then one reference is
   * swapped and the generation bumped. Requests admitted before finish on the engines that
   * admitted them; what only the old generation used is closed once they are over (or after
   * `closeTimeout`). Refused options leave the configuration in force running. Emits
   * `config.reloaded` or `config.refused`. Reloads run one at a time; never rejects.
   *
   * @example
   * const result = await aegis.reload({ ...options, limiter: { limit: 200 } })
   * if (!result.ok) console.error(result.errors)
   */
  reload(options: AegisOptions, how?: ReloadOptions): Promise<ReloadResult>
  /** Stop everything: drain attached servers, release metrics. Idempotent. */
  close(): Promise<void>
  readonly closed: boolean
}
