/**
 * The engines, in the order they run: one line each. A new engine is a folder
 * under `src/`, a line here and a section in the options schema; the pipeline
 * (aegis.ts, admission.ts) composes whatever this table builds and knows none of
 * them by name.
 */
import type { IncomingMessage } from 'node:http'
import { accessLogEngine } from '../access-log/index.js'
import { adminEngine, type AdminApi, type AdminEngine } from '../admin/engine.js'
import { anomalyEngine, weightOf, type AnomalyApi } from '../anomaly/engine.js'
import { createAuditLog, type AuditLog } from '../audit/index.js'
import type { ClientResolver } from '../client/index.js'
import { corsEngine } from '../cors/engine.js'
import { createCors } from '../cors/index.js'
import { gatewayEngine, type GatewayApi, type GatewayEngine } from '../gateway/engine.js'
import { ghostEngine, type GhostApi } from '../ghost/engine.js'
import { historyEngine, type HistoryApi } from '../history/engine.js'
import { breakerEngine } from '../breaker/engine.js'
import { createBreakerBus, type BreakerBus } from '../breaker/shared.js'
import { securityHeaders } from '../headers/index.js'
import type { Engine, UpstreamHooks } from '../kernel/engine.js'
import type { EventBus, Unsubscribe } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import type { AdmittedState, Rejection } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import { limiterEngine } from '../limiter/engine.js'
import { createExemptions } from '../limiter/lists.js'
import { overloadEngine, type OverloadApi } from '../overload/index.js'
import { createLimiter, type Limiter } from '../limiter/index.js'
import { metricsEngine, type MetricsApi } from '../metrics/engine.js'
import type { Metrics } from '../metrics/index.js'
import type { AegisConfig } from '../options/index.js'
import type { Aegis } from './api.js'
import type { RedisConnection } from '../store/index.js'
import type { BodyLimits } from '../validator/body-limits.js'
import { validatorEngine } from '../validator/engine.js'
import { createValidator, type Validator } from '../validator/index.js'

/** What every engine may be built from: the parsed options and the instance's shared services. */
export interface EngineContext {
  readonly config: AegisConfig
  readonly logger: Logger | undefined
  readonly warn: Warn
  readonly events: EventBus
  readonly clients: ClientResolver
  readonly metrics: Metrics | undefined
  readonly store: RedisConnection | undefined
  /** The public entry points of the engines built so far (the gateway shares breakers through the breaker engine's bus). */
  readonly apis: EngineApis
  readonly bodyLimits: BodyLimits
  /** The state of an admitted request. */
  stateOf: (req: IncomingMessage) => AdmittedState | undefined
  /** A request's target as the client sent it, where Aegis is mounted (a framework may have cut `req.url`). */
  targetOf: (req: IncomingMessage) => string
  /** Count a rejection an engine answered itself. */
  count: (rejection: Rejection) => void
  /** The answer to a user callback that failed, or to a bug of ours (logged once; not counted). */
  failure: (err: unknown) => Rejection
  /** The gateway hooks of the engines built so far, composed. */
  upstream: () => UpstreamHooks
  /** An engine started taking upgrades: attached servers listen for them. */
  upgradesChanged: () => void
  /** The names of the engines of the configuration in force, in table order. */
  engines: () => readonly string[]
  /** The configuration in force (`config` is the one being built; they differ during a reload). */
  current: () => AegisConfig
  /** The generation of the configuration in force: 1 at start, one more at each reload. */
  generation: () => number
  /** The public entry points of the engines in force (`apis` holds those of the generation being built). */
  readonly live: EngineApis
  /** When the instance was created (ms since the epoch). */
  readonly startedAt: number
  /** The instance's own `validate` and `reload` (the admin API's configuration endpoints), once it exists. */
  readonly reconfigure: () => Pick<Aegis, 'validateConfig' | 'reload'>
}

/** An engine as the table builds it. */
export type BuiltEngine = Engine & { readonly api?: unknown }

/**
 * A change an engine takes in place (the gateway's routes, the admin API's tokens), prepared
 * off to the side during a reload: `commit` applies it at the swap and hands back what it
 * retired, to close once the requests of the old generation are over; `abort` drops it.
 */
export interface EngineUpdate {
  commit(): (() => Promise<void>) | undefined
  abort(): Promise<void>
}

/** The public entry points some engines have (`aegis.limiter`, `aegis.gateway`, …), by engine name. */
export interface EngineApis {
  validator?: Validator
  limiter?: Limiter
  metrics?: MetricsApi
  gateway?: GatewayApi
  breaker?: BreakerBus
  overload?: OverloadApi
  ghost?: GhostApi
  audit?: AuditLog
  anomaly?: AnomalyApi
  admin?: AdminApi
  history?: HistoryApi
}

/**
 * One line of the table: an engine's name and how to build it (`undefined`: turned off).
 * A reload keeps the engine it built before — and its state: counters, breakers, health,
 * cached answers — when what it `reads` of the options is the same (`sameValue`: functions
 * by reference) and every engine it `uses` was kept; an `update` may take a change in place.
 * Whatever `create` keeps of the context must hold across generations: the instance-level
 * services, `live`, `current`, `generation` — not `config` or `apis`, read at build only.
 */
export interface EngineEntry {
  readonly name: keyof EngineApis | (string & {})
  create(ctx: EngineContext): BuiltEngine | undefined
  /** What the engine is built from, beside the instance's services: `undefined` (absent) is never kept. */
  reads?(config: AegisConfig): unknown
  /** The engines before it whose APIs or hooks it holds: rebuilt when one of them is. */
  readonly uses?: readonly (keyof EngineApis)[]
  /** Take a changed `reads` in place: `undefined` when it cannot (the engine is built anew). */
  update?(engine: BuiltEngine, ctx: EngineContext): EngineUpdate | undefined
}

/** The metrics path, which no guard counts or sheds (a scrape during an overload is when it matters). */
const metricsPath = (config: AegisConfig): string[] =>
  config.metrics !== false && config.metrics.path !== undefined ? [config.metrics.path] : []

/** The engines, in the order they admit requests, observe responses and hook the gateway. */
export const ENGINES: readonly EngineEntry[] = [
  {
    name: 'headers',
    reads: (config) => config.headers,
    create: ({ config }) =>
      config.headers === false
        ? undefined
        : {
            name: 'headers',
            headers: securityHeaders(config.headers),
            ...(config.headers.removePoweredBy ? { drops: 'x-powered-by' } : {}),
          },
  },
  {
    name: 'validator',
    reads: (config) => config.validator,
    create: ({ config, bodyLimits }) => {
      if (config.validator === false) return undefined
      const validator = createValidator(config.validator)
      return { ...validatorEngine(validator, bodyLimits), api: validator }
    },
  },
  {
    name: 'cors',
    reads: (config) => config.cors,
    create: ({ config }) => (config.cors === false ? undefined : corsEngine(createCors(config.cors))),
  },
  {
    // Before the limiter, which charges by its scores, and before overload: a blocked client takes no slot.
    name: 'anomaly',
    reads: (config) => config.anomaly,
    create: ({ config, metrics, events, logger, failure, store, warn }) =>
      config.anomaly === false
        ? undefined
        : anomalyEngine(config.anomaly, { metrics, events, logger, failure, store, warn }),
  },
  {
    // Before the limiter: a request the process cannot take costs its client no quota.
    name: 'overload',
    reads: (config) => [config.limiter, metricsPath(config)],
    create: ({ config, metrics }) =>
      config.limiter === false
        ? undefined
        : overloadEngine(config.limiter, {
            metrics,
            isExempt: createExemptions([...config.limiter.exempt, ...metricsPath(config)]),
          }),
  },
  {
    name: 'limiter',
    reads: (config) => [
      config.limiter,
      metricsPath(config),
      config.trustProxy !== false,
      config.anomaly !== false && config.anomaly.mode === 'throttle',
    ],
    uses: ['overload'],
    create: ({ config, store, metrics, warn, stateOf, apis, events }) =>
      config.limiter === false
        ? undefined
        : limiterEngine(
            createLimiter(config.limiter, {
              conn: store,
              metrics,
              warn,
              exemptPaths: metricsPath(config),
              trustsProxy: config.trustProxy !== false,
              clientOf: (req) => stateOf(req)?.client,
              overload: apis.overload,
              // Throttle mode: a client costs more points the more anomalous it is.
              weightOf: config.anomaly !== false && config.anomaly.mode === 'throttle' ? weightOf : undefined,
              events,
            }),
          ),
  },
  {
    name: 'metrics',
    reads: (config) => config.metrics,
    create: ({ config, metrics, logger }) =>
      metrics === undefined || config.metrics === false
        ? undefined
        : metricsEngine(metrics, config.metrics.path, logger),
  },
  {
    name: 'access-log',
    reads: (config) => config.accessLog,
    create: ({ config, logger }) =>
      config.accessLog && logger !== undefined ? accessLogEngine(logger) : undefined,
  },
  {
    // Before the gateway, whose exchanges it counts (`upstream.settled`); fed by the bus and `rejected` too.
    name: 'history',
    reads: (config) => config.history,
    create: ({ config, events, store, logger }) =>
      config.history === false ? undefined : historyEngine(config.history, { events, store, logger }),
  },
  {
    name: 'breaker',
    // The store's, which needs a restart.
    reads: () => null,
    create: ({ store, logger }) =>
      store === undefined ? undefined : breakerEngine(createBreakerBus(store, logger)),
  },
  {
    // Before the gateway, which hooks it: it learns at the response tap and answers at `fail()`.
    name: 'ghost',
    reads: ghostReads,
    create: ({ config, store, metrics, logger, events, stateOf, targetOf }) =>
      ghostEngine({
        top: config.ghost,
        routes: config.proxy,
        conn: store,
        metrics,
        logger,
        events,
        stateOf,
        targetOf,
      }),
  },
  {
    name: 'gateway',
    // The top-level breaker and chaos: what a route added by proxy() inherits.
    reads: (config) => [config.proxy, config.breaker, config.chaos],
    // Its routes hold the breaker bus and the ghost's hooks.
    uses: ['breaker', 'ghost'],
    // Route by route: an unchanged route keeps its pools, health, breakers and queue.
    update: (engine, { config }) =>
      (engine as GatewayEngine).reconfigure(config.proxy, { breaker: config.breaker, chaos: config.chaos }),
    create: (ctx) =>
      gatewayEngine(ctx.config.proxy, {
        peerTrusted: (req) => ctx.clients.peerTrusted(req),
        clientKey: (req) => (ctx.stateOf(req)?.client ?? ctx.clients.resolve(req)).key,
        metrics: ctx.metrics,
        logger: ctx.logger,
        setBodyLimit: (req, bytes) => ctx.bodyLimits.setLimit(req, bytes),
        countRejection: ctx.count,
        breakers: ctx.apis.breaker,
        events: ctx.events,
        // The hooks of the engines before the gateway in this table: the gateway comes last.
        upstream: ctx.upstream(),
        warn: ctx.warn,
        failure: ctx.failure, // the gateway's answer() counts it
        routeDefaults: { breaker: ctx.config.breaker, chaos: ctx.config.chaos },
        storeConfigured: ctx.store !== undefined,
        raiseBodyLimit: (bytes) => ctx.bodyLimits.raise(bytes),
        upgradesChanged: ctx.upgradesChanged,
      }),
  },
  {
    // Fed by the bus: the engines' state changes, whoever emits them.
    name: 'audit',
    reads: (config) => config.audit,
    create: ({ config, warn, events, store, logger }) => {
      if (config.audit === false) return undefined
      // Its listeners go with it: a reload that builds another trail must not leave this one recording.
      const scoped = scopedBus(events)
      const audit = createAuditLog(config.audit, warn, { events: scoped.bus, store, logger })
      return {
        name: 'audit',
        api: audit,
        close: async () => {
          scoped.close()
          await audit.close()
        },
      }
    },
  },
  {
    // Last: it reads every engine built before it, through their public APIs (those in force).
    name: 'admin',
    reads: (config) => config.admin,
    // Same listener and mount point: tokens, hosts and origins follow the new options in place.
    update: (engine, { config }) =>
      config.admin === false ? undefined : (engine as AdminEngine).reconfigure(config.admin),
    create: (ctx) =>
      ctx.config.admin === false
        ? undefined
        : adminEngine(ctx.config.admin, {
            config: ctx.current,
            generation: ctx.generation,
            apis: ctx.live,
            events: ctx.events,
            store: ctx.store,
            engines: ctx.engines,
            startedAt: ctx.startedAt,
            logger: ctx.logger,
            reconfigure: ctx.reconfigure,
            // The live feed's counters: the last second of the metrics history, when it is on.
            counters: () => ctx.live.history?.live(1),
          }),
  },
]

/** The bus, with every listener added through it removed by `close()`. */
function scopedBus(events: EventBus): { bus: EventBus; close: () => void } {
  const offs: Unsubscribe[] = []
  const kept = (off: Unsubscribe): Unsubscribe => {
    offs.push(off)
    return off
  }
  return {
    bus: {
      on: (type, listener) => kept(events.on(type, listener)),
      onAny: (listener) => kept(events.onAny(listener)),
      emit: (type, event) => events.emit(type, event),
      has: (type) => events.has(type),
    },
    close: () => {
      for (const off of offs.splice(0)) off()
    },
  }
}

/** What the ghost engine reads: the top-level section, and the ghost sections routes set themselves. */
function ghostReads(config: AegisConfig): unknown {
  return [
    config.ghost,
    config.proxy.flatMap((r) => (r.ghost === undefined || r.ghost === false ? [] : [r.ghost])),
  ]
}
