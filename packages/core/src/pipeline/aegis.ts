import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { createAuditLog, type AuditTrail } from '../audit/index.js'
import { createClientResolver, maskAddress } from '../client/index.js'
import { createCors } from '../cors/index.js'
import { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import { securityHeaders } from '../headers/index.js'
import { createHeaderWriter } from '../node/header-store.js'
import {
  AEGIS_ROUTE,
  createMetrics,
  createRouteLearner,
  UNMATCHED_ROUTE,
  type Metrics,
} from '../metrics/index.js'
import { createLimiter, type Limiter, type LimitResult } from '../limiter/index.js'
import { parseOptions, parseSection, type AegisConfig, type AegisOptions } from '../options/index.js'
import {
  createBreakerBus,
  createGateway,
  createProxyRoute,
  proxyRouteSchema,
  underPrefix,
  withRouteDefaults,
  type Gateway,
  type GatewayDeps,
  type ProxyRoute,
  type ProxyRouteOptions,
  type RouteDefaults,
} from '../gateway/index.js'
import { connectStore, type RedisConnection } from '../store/index.js'
import {
  checkServer,
  assertStrictParser,
  createClientErrorHandler,
  type HttpServer,
} from '../server/index.js'
import { writeSocketRejection } from '../node/socket.js'
import { shapeRequests, type ShapedRequests } from '../node/shape.js'
import { createValidator, type RequestShape } from '../validator/index.js'
import { answerInstead, bodyTooLarge, setWatchedLimit, watchBodySize } from '../validator/body-limit.js'
import { createRouteValidator, type RouteSchemas, type RouteValidator } from '../validator/route-schema.js'
import { createWarnOnce } from '../kernel/warnings.js'
import { createFailureAnswers, guardCallback, safeLogger } from '../kernel/callbacks.js'
import { checkedRejection } from '../options/reject.js'
import type { AegisRequestState, HeaderList, Rejection, RouteOf } from '../kernel/types.js'
import { pathOf } from '../kernel/url.js'
import { stateSlots } from './state.js'
import { problem } from '../kernel/problem.js'
import { createEventBus, type EventBus } from '../kernel/events.js'

interface State extends AegisRequestState {
  headers: HeaderList
  rejection: Rejection | undefined
  /** Holds an adaptive-concurrency slot until its response ends. */
  slot: boolean
  /**
   * The request's own response, once an adapter tracks it: where a late rejection (413) goes.
   * Not kept where states live beside requests (`hooks.responseOf` finds it there).
   */
  res: ServerResponse | undefined
}

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
}

/**
 * The framework-agnostic Aegis instance. Adapters call `admit` once per request,
 * write what it says, and call `track` so `observe` runs when the response ends.
 */
export interface Aegis {
  readonly config: AegisConfig
  /**
   * Run the guards. Returns the request's state: `state.rejection` set means
   * answer that instead of calling the app; `state.headers` go on the response
   * either way. Calling it again for the same request returns the same state
   * (a request is admitted once, however it is mounted). A promise when a
   * shared store (Redis) decides; synchronous otherwise. Never throws: a user
   * callback that fails makes a 500 rejection.
   */
  admit(req: IncomingMessage): AegisRequestState | Promise<AegisRequestState>
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
  /** The audit trail (upstream state changes, fault-injection switches), unless `audit: false`. */
  readonly audit: AuditTrail | undefined
  /** The event bus: every engine's state changes (`upstream.breaker`, …); subscribe with `on()`. */
  readonly events: EventBus
  /** Aegis' own Redis connection, when a shared store is configured. */
  readonly store: RedisConnection | undefined
  /** The proxy routes of the `proxy` option (longest prefix first). */
  readonly gateway: Gateway
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
  /** Stop everything: drain attached servers, release metrics. Idempotent. */
  close(): Promise<void>
  readonly closed: boolean
}

/**
 * Create the core instance. Throws `AegisConfigError` on invalid options.
 *
 * @example
 * const aegis = createAegis({ trustProxy: ['loopback'] })
 * const state = aegis.admit(req)
 * if (state.rejection) { ...write it... }
 */
export function createAegis(options?: AegisOptions, hooks: AdapterHooks = {}): Aegis {
  const config = parseOptions(options)
  const states = stateSlots<State>(hooks.stateBesideRequest === true)
  // The user's logger cannot throw into a request, an upgrade or a timer.
  const logger = safeLogger(config.logger)
  const warn = createWarnOnce(logger)
  const clients = createClientResolver({
    trustProxy: config.trustProxy,
    ipv6Subnet: config.ipv6Subnet,
    onUntrustedForwardedFor: () =>
      warn(
        WarningCodes.XFF_UNTRUSTED,
        'X-Forwarded-For arrived but trustProxy is false, so it is ignored and every client behind a proxy shares its address. If Aegis runs behind a proxy, set trustProxy to its address or hop count.',
      ),
  })
  const validator = config.validator === false ? undefined : createValidator(config.validator)
  const security: HeaderList = config.headers === false ? [] : securityHeaders(config.headers)
  const writeHeaders = createHeaderWriter(
    config.headers !== false && config.headers.removePoweredBy ? 'x-powered-by' : undefined,
  )
  const cors = config.cors === false ? undefined : createCors(config.cors)
  const metrics = config.metrics === false ? undefined : createMetrics(config.metrics)
  const events = createEventBus((err, type) => logger?.error({ err, type }, 'event listener failed'))
  const audit = config.audit === false ? undefined : createAuditLog(config.audit, warn, events)
  /** `breaker.shared` needs a store to share through: refused at startup, before connecting anywhere. */
  const storeConfigured = config.store.redis !== undefined || config.store.cluster !== undefined
  const requireStoreFor = (breaker: AegisConfig['breaker'], path: string): void => {
    if (!storeConfigured && breaker !== undefined && breaker !== false && breaker.shared)
      throw new AegisConfigError([
        { path, message: 'sharing breaker states needs a shared store: set the store option (Redis)' },
      ])
  }
  requireStoreFor(config.breaker, 'breaker.shared')
  config.proxy.forEach((route, i) => requireStoreFor(route.breaker, `proxy.${i}.breaker.shared`))
  /** The top-level settings a route added by `proxy()` inherits, as the routes of `proxy` did. */
  const routeDefaults: RouteDefaults = { breaker: config.breaker, chaos: config.chaos }
  const store = connectStore(config.store, logger, {
    onError: (reason) => metrics?.storeError(reason),
    onStateChange: (up) => metrics?.storeUp(up),
  })
  const limiter =
    config.limiter === false
      ? undefined
      : createLimiter(config.limiter, {
          conn: store,
          metrics,
          warn,
          exemptPaths:
            config.metrics !== false && config.metrics.path !== undefined ? [config.metrics.path] : [],
          trustsProxy: config.trustProxy !== false,
          clientOf: (req) => states.get(req)?.client,
        })
  const failure = createFailureAnswers(logger)
  /** `failure`, counted: for the answers no later step counts (conclude() counts its own). */
  const failed = (err: unknown): Rejection => {
    const rejection = failure(err)
    metrics?.rejection(rejection.reason)
    return rejection
  }
  const gatewayDeps: GatewayDeps = {
    peerTrusted: (req) => clients.peerTrusted(req),
    clientKey: (req) => (states.get(req)?.client ?? clients.resolve(req)).key,
    metrics,
    logger,
    setBodyLimit: (req, bytes) => aegis.setBodyLimit(req, bytes),
    countRejection: (rejection) => metrics?.rejection(rejection.reason),
    breakers: store === undefined ? undefined : createBreakerBus(store, logger),
    events,
    upstream: {}, // the engines' gateway hooks, composed (none yet)
    warn,
    failure, // the gateway's answer() counts it
  }
  const gateway = createGateway(config.proxy, gatewayDeps)
  const extraRoutes: ProxyRoute[] = []
  // Routes that take upgrades (the server's 'upgrade' event never passes a framework's router).
  const upgradeRoutes: ProxyRoute[] = [...gateway.routes]
  /** Admit an upgrade request and proxy it through the route owning its path. */
  function onUpgrade(this: HttpServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // An event listener of the host's server: nothing may escape it (a throw here is an uncaught exception).
    try {
      upgrade(this, req, socket, head)
    } catch (err) {
      failed(err)
      socket.destroy()
    }
  }
  function upgrade(server: HttpServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? '/'
    const route = upgradeRoutes.find((r) => underPrefix(r.config.prefix, url) !== undefined)
    if (route === undefined) {
      // Someone else's upgrade (a WebSocket server of the app), or nobody's: with us the only
      // listener, Node will not serve it as a plain request any more, so refuse it plainly.
      if (server.listenerCount('upgrade') === 1) socket.destroy()
      return
    }
    socket.on('error', () => socket.destroy())
    const proceed = (state: AegisRequestState): void => {
      // An upgrade holds an adaptive-concurrency slot for its handshake only: no response will end it.
      const release = (ok: boolean): void => {
        const s = state as State
        if (!s.slot) return
        s.slot = false
        limiter?.release(performance.now() - s.startedAt, ok)
      }
      if (state.rejection !== undefined) {
        release(true)
        return writeSocketRejection(socket, state.rejection, state.headers)
      }
      const upgraded = route.upgrade(req, socket, head, url)
      if (upgraded === false) return void socket.destroy() // the route matched a moment ago
      upgraded.then(
        () => release(true),
        (err: unknown) => {
          // A user callback of the route (router, balancer.hash) threw, or a bug of ours: 500 on the socket.
          release(false)
          if (!socket.destroyed) writeSocketRejection(socket, failed(err), state.headers)
          socket.destroy()
        },
      )
    }
    const admitted = admit(req)
    if (!(admitted instanceof Promise)) return proceed(admitted)
    admitted.then(proceed).catch((err: unknown) => {
      failed(err)
      socket.destroy()
    })
  }
  const largestRouteBody = (routes: readonly { config: { maxBodyBytes?: number | undefined } }[]): number =>
    Math.max(0, ...routes.map((r) => r.config.maxBodyBytes ?? 0))
  const learner = createRouteLearner(config.metrics === false ? 1 : config.metrics.maxRoutes)
  const { accessLog, serverTiming } = config
  const skip = config.skip === undefined ? undefined : guardCallback('skip', config.skip)
  const onReject = config.onReject === undefined ? undefined : guardCallback('onReject', config.onReject)
  const routeOf = hooks.routeOf
  const maxBodyBytes = validator?.maxBodyBytes ?? Number.POSITIVE_INFINITY
  const closeHeader: HeaderList = [['connection', 'close']]
  const scrapeFailed = problem({
    status: 500,
    code: ErrorCodes.INTERNAL,
    reason: 'metrics',
    title: 'Internal Server Error',
    detail: 'The metrics could not be collected.',
  })

  const servers = new Set<HttpServer>()
  // Attached servers (once each), for routes added later that take upgrades.
  const attachedServers = new Set<HttpServer>()
  /** The request shaping of each server (attached, or met by a request: `hooks.shapeServers`), stopped on `close()`. */
  const shapes = new Map<HttpServer, { shaped: ShapedRequests; closed: () => void }>()
  const shapeServer = (server: HttpServer): void => {
    if (shapes.has(server)) return
    // A server closed for good (supertest makes one per request) keeps nothing here.
    const closed = (): void => unshapeServer(server)
    shapes.set(server, { shaped: shapeRequests(server), closed })
    server.once('close', closed)
  }
  const unshapeServer = (server: HttpServer): void => {
    const entry = shapes.get(server)
    if (entry === undefined) return
    shapes.delete(server)
    entry.shaped.stop()
    server.off('close', entry.closed)
  }
  const refuseConnect = (req: IncomingMessage, socket: Duplex): void => {
    const r = validator?.methodRejection
    if (r === undefined) return void socket.destroy()
    metrics?.rejection(r.reason)
    writeSocketRejection(socket, r, security)
  }
  const checkedServers = new WeakSet<object>()
  const responseOf = hooks.responseOf
  let draining = false
  let closing: Promise<void> | undefined

  /**
   * A body outgrew its limit while the app (or the gateway) holds the request. Runs
   * inside Node's HTTP parser: it must not throw. The 413 goes on this request's own
   * response — never the socket's current one, which may answer an earlier pipelined
   * request — and the app's later writes on it are ignored (`answerInstead`).
   */
  const onBodyExceeded = (req: IncomingMessage): void => {
    try {
      const state = states.get(req)
      const rejection = bodyTooLarge(state?.bodyLimit ?? maxBodyBytes)
      metrics?.rejection(rejection.reason)
      // Untracked (core used without an adapter): the socket's current response, if it is this request's.
      const current = (req.socket as { _httpMessage?: ServerResponse | null } | null)?._httpMessage
      const res = state?.res ?? responseOf?.(req) ?? (current?.req === req ? current : undefined)
      if (res === undefined) return void req.socket?.destroy()
      if (state !== undefined && state.rejection === undefined) state.rejection = rejection
      answerInstead(res, rejection, state?.headers ?? security)
    } catch (err) {
      failed(err)
      req.socket?.destroy()
    }
  }

  // Filled in by the validator; admission is synchronous, so one object serves
  // every request (no allocation on the hot path).
  // `ceiling`: a proxy route may allow larger bodies than the validator's default.
  const shape: RequestShape = {
    watch: false,
    ceiling: Math.max(maxBodyBytes, largestRouteBody(gateway.routes)),
  }

  function admit(req: IncomingMessage): AegisRequestState | Promise<AegisRequestState> {
    const existing = states.get(req)
    if (existing !== undefined) return existing
    const startedAt = performance.now()
    // Never throws: a failing user callback (or a bug of ours) is answered 500 instead.
    try {
      return guard(req, startedAt)
    } catch (err) {
      const rejection = failed(err)
      let state = states.get(req)
      if (state === undefined) {
        state = newState(clients.resolve(req), security, rejection, false, startedAt)
        states.set(req, state)
      }
      state.rejection = rejection
      state.headers = security
      return state
    }
  }

  const newState = (
    client: AegisRequestState['client'],
    headers: HeaderList,
    rejection: Rejection | undefined,
    skipped: boolean,
    startedAt: number,
  ): State => ({
    client,
    headers,
    rejection,
    skipped,
    startedAt,
    route: undefined,
    bodyLimit: maxBodyBytes,
    input: undefined,
    slot: false,
    res: undefined,
  })

  function guard(req: IncomingMessage, startedAt: number): State | Promise<State> {
    const server = (req.socket as { server?: HttpServer | null } | null)?.server
    if (server != null && !checkedServers.has(server)) {
      checkedServers.add(server)
      checkServer(server, warn)
      // An app that never calls attach(): shape from this request on (it runs once per server).
      if (hooks.shapeServers === true && closing === undefined) shapeServer(server)
    }

    const client = clients.resolve(req)
    const skipped = skip !== undefined && skip(req) === true
    let rejection: Rejection | undefined
    let headers = security
    let watch = false
    if (!skipped) {
      shape.watch = false
      rejection = validator?.inspect(req, shape)
      watch = shape.watch
      if (rejection === undefined && cors !== undefined) {
        const verdict = cors.evaluate(req)
        if (verdict.kind === 'preflight') rejection = verdict.response
        else if (verdict.headers.length > 0) headers = [...security, ...verdict.headers]
      }
    }
    const state = newState(client, headers, rejection, skipped, startedAt)
    states.set(req, state)
    // Count chunks from the first one: with a shared store the parser keeps pushing the body while Redis answers.
    if (watch && rejection === undefined && validator !== undefined)
      watchBodySize(req, maxBodyBytes, onBodyExceeded)
    const limited = skipped || rejection !== undefined ? undefined : limiter?.check(req, client, startedAt)
    if (limited !== undefined && 'then' in limited) {
      return limited.then(
        // A body that outgrew its limit while the store decided was answered 413 meanwhile: that stands.
        (result) =>
          state.rejection === undefined ? conclude(req, state, result) : keepTakeover(state, result),
        (err: unknown) => {
          // The limiter handles store errors itself; anything else is a bug: admit, and say so.
          logger?.error({ err }, 'rate limiter failed; request admitted')
          return conclude(req, state, undefined)
        },
      )
    }
    return conclude(req, state, limited)
  }

  /** A request answered 413 while a shared store decided: only the store's slot is kept (observe releases it). */
  function keepTakeover(state: State, limited: LimitResult): State {
    state.slot = limited.acquired === true
    return state
  }

  /** Finish admission once every guard has spoken. */
  function conclude(req: IncomingMessage, state: State, limited: LimitResult | undefined): State {
    if (limited !== undefined) {
      if (limited.headers.length > 0) state.headers = [...state.headers, ...limited.headers]
      state.rejection = limited.rejection
      state.slot = limited.acquired === true
    }
    let rejection = state.rejection
    if (rejection !== undefined && rejection.status >= 400) {
      // A preflight answer is not a rejection: the hook and the counter see refusals only.
      if (onReject !== undefined) {
        try {
          rejection = checkedRejection(onReject(rejection, req), rejection, warn)
        } catch (err) {
          rejection = failure(err)
          state.headers = security
        }
      }
      state.rejection = rejection
      metrics?.rejection(rejection.reason)
    }
    if (draining) state.headers = [...state.headers, ...closeHeader]
    if (serverTiming) {
      const ms = performance.now() - state.startedAt
      state.headers = [...state.headers, ['server-timing', `aegis;dur=${ms.toFixed(3)};desc="Aegis guards"`]]
    }
    return state
  }

  function observe(req: IncomingMessage, res: ServerResponse): void {
    const state = states.get(req)
    if (state === undefined) return
    const status = res.writableFinished ? res.statusCode : 499 // nginx's "client closed request"
    const seconds = (performance.now() - state.startedAt) / 1e3
    if (state.slot) {
      state.slot = false
      // Server errors and abandoned requests are the overload signals of the adaptive limit.
      limiter?.release(seconds * 1e3, status < 500 && status !== 499)
    }
    // Requests Aegis answered itself never reached a router: one label for them all.
    let route: string
    if (state.rejection !== undefined) route = AEGIS_ROUTE
    else {
      const matched = state.route ?? routeOf?.(req)
      if (matched !== undefined) route = learner.bound(matched)
      else route = status === 404 ? UNMATCHED_ROUTE : learner.template(req.url ?? '/')
    }
    state.route = route
    metrics?.request(req.method ?? 'OTHER', route, status, seconds)
    if (accessLog && logger !== undefined) {
      // Path only (queries carry tokens), masked client, no headers or bodies.
      logger.info(
        {
          method: req.method,
          path: pathOf(req.url ?? ''),
          route,
          status,
          durationMs: Math.round(seconds * 1e6) / 1e3,
          client: maskAddress(state.client.ip),
          ...(state.rejection === undefined ? {} : { rejected: state.rejection.reason }),
        },
        'request completed',
      )
    }
  }

  // One listener function for every response: `this` is the response.
  function onResponseClose(this: ServerResponse): void {
    if (this.req !== undefined) observe(this.req, this)
  }

  const countClientError = (reason: string): void => metrics?.rejection(reason)

  async function drain(server: HttpServer): Promise<void> {
    if (!server.listening) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.closeAllConnections()
        // Upgraded sockets (proxied WebSockets) are not among the connections Node closes above.
        for (const route of upgradeRoutes) route.endUpgrades()
      }, config.closeTimeout)
      timer.unref()
      server.close(() => {
        clearTimeout(timer)
        resolve()
      })
      server.closeIdleConnections()
    })
  }

  const aegis: Aegis = {
    config,
    admit,
    stateOf: (req) => states.get(req),
    applyHeaders: (res, state) => writeHeaders(res, state.headers),
    track(req, res) {
      const state = states.get(req)
      if (state === undefined) return
      if (responseOf === undefined) state.res = res
      res.on('close', onResponseClose) // emitted once per response
    },
    observe,
    routeValidator: createRouteValidator,
    countRejection: (rejection) => metrics?.rejection(rejection.reason),
    setBodyLimit(req, bytes) {
      const state = states.get(req)
      if (state !== undefined) state.bodyLimit = bytes
      setWatchedLimit(req, bytes)
    },
    async scrapeMetrics() {
      try {
        const scraped = await metrics?.scrape()
        return scraped === undefined ? undefined : { status: 200, ...scraped }
      } catch (err) {
        logger?.error({ err, code: ErrorCodes.INTERNAL }, 'metrics scrape failed')
        return {
          status: scrapeFailed.status,
          contentType: scrapeFailed.headers['content-type'] as string,
          body: scrapeFailed.body,
        }
      }
    },
    metricsHandler(_req, res) {
      if (metrics === undefined) {
        res.statusCode = 404
        res.end()
        return
      }
      void aegis.scrapeMetrics().then((scraped) => {
        if (scraped === undefined || res.headersSent) return
        res.statusCode = scraped.status
        res.setHeader('content-type', scraped.contentType)
        res.setHeader('cache-control', 'no-store')
        res.end(scraped.body)
      })
    },
    metrics,
    limiter,
    audit,
    events,
    store,
    gateway,
    proxy(options, { upgrades = true } = {}) {
      if (closing !== undefined) throw new AegisError(ErrorCodes.CLOSED, 'proxy() after close()')
      const routeConfig = parseSection(proxyRouteSchema, withRouteDefaults(options, routeDefaults), ['proxy'])
      requireStoreFor(routeConfig.breaker, 'proxy.breaker.shared')
      const route = createProxyRoute(routeConfig, gatewayDeps)
      extraRoutes.push(route)
      if (upgrades) {
        upgradeRoutes.push(route)
        upgradeRoutes.sort((a, b) => b.config.prefix.length - a.config.prefix.length)
        // With a listener Node hands every `Upgrade` request (h2c too) to 'upgrade': add it only now.
        for (const server of attachedServers)
          if (!server.listeners('upgrade').includes(onUpgrade)) server.on('upgrade', onUpgrade)
      }
      shape.ceiling = Math.max(shape.ceiling, largestRouteBody([route]))
      return route
    },
    attach(server, { drain = true, shapeRequests: shaped } = {}) {
      if (closing !== undefined) throw new AegisError(ErrorCodes.CLOSED, 'attach() after close()')
      if (attachedServers.has(server)) return
      assertStrictParser(server)
      attachedServers.add(server)
      if (drain) servers.add(server)
      // Explicitly off also stops what a first request started (attach() called late).
      if (shaped === true) shapeServer(server)
      else if (shaped === false) unshapeServer(server)
      checkedServers.add(server)
      checkServer(server, warn)
      // Node writes a bare status line for parser errors only when nobody listens.
      if (server.listenerCount('clientError') === 0)
        server.on('clientError', createClientErrorHandler(countClientError, security))
      if (upgradeRoutes.length > 0) server.on('upgrade', onUpgrade)
      // Node hands CONNECT to 'connect' listeners and drops the socket when there are none.
      if (server.listenerCount('connect') === 0 && !validator?.allows('CONNECT'))
        server.on('connect', refuseConnect)
    },
    close() {
      closing ??= (async () => {
        draining = true
        await Promise.all([...servers].map(drain))
        servers.clear()
        attachedServers.clear()
        for (const server of [...shapes.keys()]) unshapeServer(server)
        limiter?.close()
        await Promise.all([gateway.close(), ...extraRoutes.map((r) => r.close())])
        await gatewayDeps.breakers?.close()
        await store?.close()
        metrics?.close()
      })()
      return closing
    },
    get closed() {
      return closing !== undefined
    },
  }
  return aegis
}
