/**
 * `createAegis`: parse the options, build the shared services and the engines of
 * the table (engines.ts), and compose them (admission.ts, http-server/). No engine
 * is known here by anything but the public accessor it has.
 */
import { createClientResolver } from '../client/index.js'
import { createHttpServers } from '../http-server/index.js'
import { createFailureAnswers, safeLogger } from '../kernel/callbacks.js'
import type { Engine } from '../kernel/engine.js'
import { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import { createEventBus } from '../kernel/events.js'
import type { AdmittedState, HeaderList, Rejection } from '../kernel/types.js'
import { createWarnOnce } from '../kernel/warnings.js'
import { createMetrics } from '../metrics/index.js'
import { createHeaderWriter } from '../node/header-store.js'
import { parseOptions, type AegisOptions } from '../options/index.js'
import { connectStore } from '../store/index.js'
import { createBodyLimits } from '../validator/body-limits.js'
import { createRouteValidator } from '../validator/route-schema.js'
import { guardCallback } from '../kernel/callbacks.js'
import { createFlow } from './admission.js'
import { composeUpstream } from './upstream-hooks.js'
import type { AdapterHooks, Aegis } from './api.js'
import { ENGINES, type EngineApis, type EngineContext } from './engines.js'
import { createHandler } from './handler.js'
import { stateSlots } from './state.js'

export type { AdapterHooks, Aegis } from './api.js'

/** Why a route added by `proxy()` cannot turn the ghost cache on by itself. */
const GHOST_NEEDS_TOP_LEVEL =
  'the ghost cache of a route added by proxy() needs the top-level ghost option (set ghost: true, or an object)'

/**
 * Create the core instance. Throws `AegisConfigError` on invalid options.
 *
 * @example
 * const aegis = createAegis({ trustProxy: ['loopback'] })
 * http.createServer(aegis.handler(app)).listen(3000)
 */
export function createAegis(options?: AegisOptions, hooks: AdapterHooks = {}): Aegis {
  const config = parseOptions(options)
  const states = stateSlots<AdmittedState>(hooks.stateBesideRequest === true)
  // The user's logger cannot throw into a request, an upgrade or a timer.
  const logger = safeLogger(config.logger)
  const warn = createWarnOnce(logger)
  const events = createEventBus((err, type) => logger?.error({ err, type }, 'event listener failed'))
  const clients = createClientResolver({
    trustProxy: config.trustProxy,
    ipv6Subnet: config.ipv6Subnet,
    onUntrustedForwardedFor: () =>
      warn(
        WarningCodes.XFF_UNTRUSTED,
        'X-Forwarded-For arrived but trustProxy is false, so it is ignored and every client behind a proxy shares its address. If Aegis runs behind a proxy, set trustProxy to its address or hop count.',
      ),
  })
  const metrics = config.metrics === false ? undefined : createMetrics(config.metrics)
  const store = connectStore(config.store, logger, {
    onError: (reason) => metrics?.storeError(reason),
    onStateChange: (up) => metrics?.storeUp(up),
  })
  const failure = createFailureAnswers(logger)
  // The engines that hear every rejection counted (the history): set once they are built.
  let rejecters: readonly Engine[] = []
  const countReason = (reason: string): void => {
    metrics?.rejection(reason)
    for (const engine of rejecters) (engine.rejected as NonNullable<Engine['rejected']>)(reason)
  }
  const count = (rejection: Rejection): void => countReason(rejection.reason)
  const responseOf = hooks.responseOf
  let baseHeaders: HeaderList = []
  const bodyLimits = createBodyLimits({
    maxBodyBytes: config.validator === false ? Number.POSITIVE_INFINITY : config.validator.maxBodyBytes,
    stateOf: (req) => states.get(req),
    responseOf: (req) => states.get(req)?.res ?? responseOf?.(req),
    count,
    baseHeaders: () => baseHeaders,
    failed: (err) => flow.failed(err),
  })
  const ctx: EngineContext = {
    config,
    logger,
    warn,
    events,
    clients,
    metrics,
    store,
    apis: {},
    bodyLimits,
    stateOf: (req) => states.get(req),
    targetOf: (req) => hooks.wholeTarget?.(req) ?? req.url ?? '/',
    count,
    failure,
    upstream: () => composeUpstream(engines),
    upgradesChanged: () => servers.upgradesChanged(),
    built: () => engines.map((e) => e.name),
    startedAt: Date.now(),
  }
  const engines: (Engine & { readonly api?: unknown })[] = []
  const apis = ctx.apis
  for (const entry of ENGINES) {
    const engine = entry.create(ctx)
    if (engine === undefined) continue
    engines.push(engine)
    if (engine.api !== undefined) (apis as Record<string, unknown>)[engine.name] = engine.api
  }
  baseHeaders = engines.flatMap((e) => e.headers ?? [])
  rejecters = engines.filter((e) => e.rejected !== undefined)
  const writeHeaders = createHeaderWriter(engines.find((e) => e.drops !== undefined)?.drops)
  const gateway = apis.gateway as NonNullable<EngineApis['gateway']>
  let closing: Promise<void> | undefined
  const flow = createFlow({
    engines,
    states,
    clients,
    baseHeaders,
    maxBodyBytes: bodyLimits.maxBodyBytes,
    skip: config.skip === undefined ? undefined : guardCallback('skip', config.skip),
    onReject: config.onReject === undefined ? undefined : guardCallback('onReject', config.onReject),
    serverTiming: config.serverTiming,
    maxRoutes: config.metrics === false ? 1 : config.metrics.maxRoutes,
    routeOf: hooks.routeOf,
    responseOf,
    wholeTarget: hooks.wholeTarget,
    logger,
    warn,
    count,
    failure,
    met: (server) => servers.met(server),
    draining: () => servers.draining,
    writeHeaders,
  })
  const servers = createHttpServers({
    warn,
    count: countReason,
    baseHeaders,
    closeTimeout: config.closeTimeout,
    engines,
    admit: flow.admit,
    observe: flow.observeAs,
    failed: flow.failed,
    shapeMet: hooks.shapeServers === true,
  })
  const open = (what: string): void => {
    if (closing !== undefined) throw new AegisError(ErrorCodes.CLOSED, `${what} after close()`)
  }

  const aegis: Aegis = {
    config,
    admit: flow.admit,
    dispatch: flow.dispatch,
    guard: flow.guard,
    handler: (app) => createHandler(flow, app, logger, flow.failed),
    endpoints: engines.flatMap((e) => e.endpoints ?? []),
    events,
    stateOf: (req) => states.get(req),
    applyHeaders: (res, state) => writeHeaders(res, state.headers),
    track: flow.track,
    observe: flow.observe,
    routeValidator: createRouteValidator,
    countRejection: count,
    setBodyLimit: bodyLimits.setLimit,
    scrapeMetrics: async () => apis.metrics?.scrape(),
    metricsHandler(req, res) {
      if (apis.metrics !== undefined) return apis.metrics.handle(req, res)
      res.statusCode = 404
      res.end()
    },
    metrics,
    limiter: apis.limiter,
    ghost: apis.ghost,
    anomaly: apis.anomaly,
    audit: apis.audit,
    admin: apis.admin,
    history: apis.history,
    store,
    gateway: gateway.gateway,
    proxy(options, use) {
      open('proxy()')
      // The ghost engine is built from the options at startup: a later route cannot bring it.
      const ghost = (options as { ghost?: unknown } | undefined)?.ghost
      if (apis.ghost === undefined && ghost !== undefined && ghost !== false)
        throw new AegisConfigError([{ path: 'proxy.ghost', message: GHOST_NEEDS_TOP_LEVEL }])
      return gateway.proxy(options, use)
    },
    attach(server, { drain = true, shapeRequests } = {}) {
      open('attach()')
      servers.attach(server, { drain, shapeRequests })
    },
    close() {
      closing ??= (async () => {
        await servers.close()
        // Children in reverse order: the gateway before the breaker bus it publishes on, then the store.
        for (const engine of [...engines].reverse()) await engine.close?.()
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
