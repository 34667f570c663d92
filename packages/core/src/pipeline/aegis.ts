/**
 * `createAegis`: parse the options, build the shared services and the engines of
 * the table (engines.ts), and compose them (admission.ts, http-server/). No engine
 * is known here by anything but the public accessor it has.
 *
 * A configuration and what is built from it are one generation; `reload()` builds the
 * next off to the side (keeping the engines whose definition did not change), swaps one
 * reference, and closes what the old one alone used once its requests are over.
 */
import type { ServerResponse } from 'node:http'
import { createClientResolver, type ClientResolver } from '../client/index.js'
import { createHttpServers } from '../http-server/index.js'
import { createFailureAnswers, safeLogger } from '../kernel/callbacks.js'
import type { Endpoint, Engine } from '../kernel/engine.js'
import { sameValue } from '../kernel/equal.js'
import { AegisConfigError, AegisError, ErrorCodes, WarningCodes, type ConfigIssue } from '../kernel/errors.js'
import { createEventBus } from '../kernel/events.js'
import type { AdmittedState, HeaderList, Rejection } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import { createWarnOnce } from '../kernel/warnings.js'
import { createMetrics, createRouteLearner } from '../metrics/index.js'
import { createHeaderWriter } from '../node/header-store.js'
import { parseOptions, type AegisConfig, type AegisOptions } from '../options/index.js'
import { configDiff, configHash } from '../reload/diff.js'
import '../reload/events.js'
import { connectStore } from '../store/index.js'
import { createBodyLimits } from '../validator/body-limits.js'
import { createRouteValidator } from '../validator/route-schema.js'
import { guardCallback } from '../kernel/callbacks.js'
import { createFlow, type Flow, type Live } from './admission.js'
import { composeUpstream } from './upstream-hooks.js'
import type { AdapterHooks, Aegis, ReloadOptions, ReloadResult, ValidateResult } from './api.js'
import {
  ENGINES,
  type BuiltEngine,
  type EngineApis,
  type EngineContext,
  type EngineUpdate,
} from './engines.js'
import type { GatewayEngine } from '../gateway/engine.js'
import { createHandler } from './handler.js'
import { stateSlots } from './state.js'

export type { AdapterHooks, Aegis, ReloadOptions, ReloadResult, ValidateResult } from './api.js'

/** Why a route added by `proxy()` cannot turn the ghost cache on by itself. */
const GHOST_NEEDS_TOP_LEVEL =
  'the ghost cache of a route added by proxy() needs the top-level ghost option (set ghost: true, or an object)'

/** Sections a running instance cannot swap: what they build is the instance's own. */
const RESTART_ONLY = ['store', 'metrics', 'logger'] as const
const NEEDS_RESTART: Record<(typeof RESTART_ONLY)[number], string> = {
  store: 'store: needs a restart (the engines and the breaker bus hold its connections)',
  metrics: 'metrics: needs a restart (the registry and its series are the instance’s)',
  logger: 'logger: needs a restart (every engine holds it)',
}

/** One configuration and what is built from it. */
interface Generation {
  readonly number: number
  readonly config: AegisConfig
  readonly clients: ClientResolver
  /** The engines, in table order. */
  readonly engines: readonly BuiltEngine[]
  readonly byName: ReadonlyMap<string, BuiltEngine>
  /** What each entry of the table read of `config` (`EngineEntry.reads`). */
  readonly reads: ReadonlyMap<string, unknown>
  readonly apis: EngineApis
  readonly baseHeaders: HeaderList
  readonly writeHeaders: (res: ServerResponse, headers: HeaderList) => void
  readonly endpoints: readonly Endpoint[]
  /** The engines that hear every counted rejection (`Engine.rejected`). */
  readonly rejecters: readonly BuiltEngine[]
  readonly flow: Flow
  readonly live: Live
}

/** A generation built off to the side, with what it changes in place of the one in force. */
interface Built {
  readonly gen: Generation
  readonly updates: readonly { name: string; update: EngineUpdate }[]
  readonly created: readonly BuiltEngine[]
  readonly kept: readonly string[]
}

/** Whether a request admitted by a generation may still reach the engine (its stages, endpoints, upgrades). */
const servesRequests = (e: BuiltEngine): boolean =>
  e.admit !== undefined ||
  e.observe !== undefined ||
  e.respond !== undefined ||
  e.forward !== undefined ||
  e.upgrade !== undefined ||
  e.upstream !== undefined ||
  e.endpoints !== undefined ||
  e.headers !== undefined

const maxBodyOf = (config: AegisConfig): number =>
  config.validator === false ? Number.POSITIVE_INFINITY : config.validator.maxBodyBytes

const issuesOf = (err: unknown): ConfigIssue[] =>
  err instanceof AegisConfigError
    ? [...err.issues]
    : [{ path: '', message: err instanceof Error ? err.message : String(err) }]

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
  const resolverOf = (c: AegisConfig, warnOf: Warn): ClientResolver =>
    createClientResolver({
      trustProxy: c.trustProxy,
      ipv6Subnet: c.ipv6Subnet,
      onUntrustedForwardedFor: () =>
        warnOf(
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
  const countReason = (reason: string): void => {
    metrics?.rejection(reason)
    // The engines that hear every rejection counted (the history), those in force.
    const rejecters = current?.rejecters
    if (rejecters !== undefined)
      for (const engine of rejecters) (engine.rejected as NonNullable<Engine['rejected']>)(reason)
  }
  const count = (rejection: Rejection): void => countReason(rejection.reason)
  const failed = (err: unknown): Rejection => {
    const rejection = failure(err)
    count(rejection)
    return rejection
  }
  const responseOf = hooks.responseOf
  // The generation in force: every entry point reads it once per call.
  let current: Generation | undefined
  const now = (): Generation => current as Generation
  const bodyLimits = createBodyLimits({
    maxBodyBytes: maxBodyOf(config),
    stateOf: (req) => states.get(req),
    responseOf: (req) => states.get(req)?.res ?? responseOf?.(req),
    count,
    baseHeaders: () => current?.baseHeaders ?? [],
    failed,
  })
  // Engines kept across reloads hold these: they follow the generation in force.
  let resolver = resolverOf(config, warn)
  const clients: ClientResolver = {
    resolve: (req) => resolver.resolve(req),
    peerTrusted: (req) => resolver.peerTrusted(req),
  }
  const live: EngineApis = {}
  const learner = createRouteLearner(config.metrics === false ? 1 : config.metrics.maxRoutes)
  const startedAt = Date.now()
  let closing: Promise<void> | undefined

  /** Build a generation from `next`, keeping what `prev` built that did not change. Throws what an engine threw. */
  function build(next: AegisConfig, prev: Generation | undefined): Built {
    const apis: EngineApis = {}
    const engines: BuiltEngine[] = []
    const byName = new Map<string, BuiltEngine>()
    const reads = new Map<string, unknown>()
    const kept = new Set<string>()
    const created: BuiltEngine[] = []
    const updates: { name: string; update: EngineUpdate }[] = []
    const ctx: EngineContext = {
      config: next,
      logger,
      warn,
      events,
      clients,
      metrics,
      store,
      apis,
      bodyLimits,
      stateOf: (req) => states.get(req),
      targetOf: (req) => hooks.wholeTarget?.(req) ?? req.url ?? '/',
      count,
      failure,
      upstream: () => composeUpstream(engines),
      upgradesChanged: () => servers.upgradesChanged(),
      engines: () => (current ?? { engines }).engines.map((e) => e.name),
      current: () => (current ?? { config: next }).config,
      generation: () => current?.number ?? 1,
      live,
      startedAt,
      reconfigure: () => aegis,
    }
    try {
      for (const entry of ENGINES) {
        const reading = entry.reads?.(next)
        reads.set(entry.name, reading)
        const before = prev?.byName.get(entry.name)
        // An engine it uses was built anew (or turned on or off): it holds the old one, so it is too.
        const usesKept = (entry.uses ?? []).every(
          (n) => kept.has(n) || (!byName.has(n) && prev?.byName.has(n) !== true),
        )
        let engine: BuiltEngine | undefined
        if (before !== undefined && usesKept && entry.reads !== undefined) {
          if (sameValue(reading, prev?.reads.get(entry.name))) engine = before
          else {
            const update = entry.update?.(before, ctx)
            if (update !== undefined) {
              updates.push({ name: entry.name, update })
              engine = before
            }
          }
        }
        if (engine === undefined) {
          engine = entry.create(ctx)
          if (engine !== undefined) created.push(engine)
        }
        if (engine === undefined) continue
        if (engine === before) kept.add(entry.name)
        engines.push(engine)
        byName.set(entry.name, engine)
        if (engine.api !== undefined) (apis as Record<string, unknown>)[entry.name] = engine.api
      }
    } catch (err) {
      for (const { update } of updates) void update.abort().catch(() => {})
      void closeEngines(created)
      throw err
    }
    const baseHeaders = engines.flatMap((e) => e.headers ?? [])
    const writeHeaders = createHeaderWriter(engines.find((e) => e.drops !== undefined)?.drops)
    const genClients =
      prev !== undefined &&
      prev.config.trustProxy === next.trustProxy &&
      prev.config.ipv6Subnet === next.ipv6Subnet
        ? prev.clients
        : prev === undefined
          ? resolver
          : resolverOf(next, warn)
    const owner: Live = { inflight: 0, idle: undefined, flow: undefined }
    const flow = createFlow({
      engines,
      states,
      clients: genClients,
      baseHeaders,
      maxBodyBytes: maxBodyOf(next),
      skip: next.skip === undefined ? undefined : guardCallback('skip', next.skip),
      onReject: next.onReject === undefined ? undefined : guardCallback('onReject', next.onReject),
      serverTiming: next.serverTiming,
      learner,
      live: owner,
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
    owner.flow = flow
    const gen: Generation = {
      number: prev === undefined ? 1 : prev.number + 1,
      config: next,
      clients: genClients,
      engines,
      byName,
      reads,
      apis,
      baseHeaders,
      writeHeaders,
      endpoints: engines.flatMap((e) => e.endpoints ?? []),
      rejecters: engines.filter((e) => e.rejected !== undefined),
      flow,
      live: owner,
    }
    return { gen, updates, created, kept: [...kept] }
  }

  /** Close engines in reverse table order; a failing close is logged, never thrown. */
  async function closeEngines(list: readonly BuiltEngine[]): Promise<void> {
    for (const engine of [...list].reverse()) {
      try {
        await engine.close?.()
      } catch (err) {
        logger?.error({ err, engine: engine.name }, `${engine.name}: close failed`)
      }
    }
  }

  // Retired generations: each closes what it alone used once its requests are over (or at closeTimeout),
  // after the one before it (an engine two of them used is closed by the later one).
  let retired: Promise<void> = Promise.resolve()
  const draining = new Set<() => void>()
  function retire(old: Generation, next: Generation, closers: readonly (() => Promise<void>)[]): string[] {
    const gone = old.engines.filter((e) => !next.engines.includes(e))
    // An engine no request reaches (the audit trail: a bus listener) goes at the swap, before the
    // reload's own event: the old trail would record it twice, and its sink with it.
    const dropped = gone.filter(servesRequests)
    const closeFailed = (engine: BuiltEngine, err: unknown): void =>
      logger?.error({ err, engine: engine.name }, `${engine.name}: close failed`)
    for (const engine of gone) {
      if (servesRequests(engine)) continue
      try {
        void engine.close?.()?.catch((err: unknown) => closeFailed(engine, err))
      } catch (err) {
        closeFailed(engine, err)
      }
    }
    const idle = new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        old.live.idle = undefined
        draining.delete(done)
        resolve()
      }
      const timer = setTimeout(done, next.config.closeTimeout)
      timer.unref()
      draining.add(done)
      if (old.live.inflight <= 0) done()
      else old.live.idle = done
    })
    const before = retired
    retired = Promise.all([before, idle]).then(async () => {
      await closeEngines(dropped)
      for (const close of closers)
        await close().catch((err: unknown) => logger?.error({ err }, 'reload: closing a retired part failed'))
    })
    return gone.map((e) => e.name)
  }

  /** Put a built generation in force: one reference swapped, what the old one alone used retired. */
  function swap(built: Built): string[] {
    const prev = current
    const closers: (() => Promise<void>)[] = []
    for (const { update } of built.updates) {
      const close = update.commit()
      if (close !== undefined) closers.push(close)
    }
    const { gen } = built
    bodyLimits.setMax(maxBodyOf(gen.config))
    resolver = gen.clients
    for (const key of Object.keys(live)) delete (live as Record<string, unknown>)[key]
    Object.assign(live, gen.apis)
    current = gen
    // Attached servers follow: upgrades taken, CONNECT refused, by the engines in force.
    if (prev !== undefined) servers.upgradesChanged()
    return prev === undefined ? [] : retire(prev, gen, closers)
  }

  /** What a running instance cannot take from `next`: restart-only sections, and what the adapter sealed. */
  function restartIssues(next: AegisConfig): ConfigIssue[] {
    const was = now()
    const issues: ConfigIssue[] = []
    for (const key of RESTART_ONLY)
      if (!sameValue(was.config[key], next[key])) issues.push({ path: key, message: NEEDS_RESTART[key] })
    const gateway = was.byName.get('gateway') as GatewayEngine | undefined
    const ghost = ENGINES.find((e) => e.name === 'ghost')
    if (
      gateway?.hasAddedRoutes() === true &&
      ghost?.reads !== undefined &&
      !sameValue(ghost.reads(was.config), ghost.reads(next))
    )
      issues.push({
        path: 'ghost',
        message: 'ghost: needs a restart (routes added by proxy() hold the ghost cache of this generation)',
      })
    if (hooks.sealedRoutes === true) {
      const prefixes = new Set(was.config.proxy.map((r) => r.prefix))
      next.proxy.forEach((r, i) => {
        if (!prefixes.has(r.prefix))
          issues.push({
            path: `proxy.${i}.prefix`,
            message: `proxy.${i}.prefix: a new prefix needs a restart here (the framework's router is sealed once it listens)`,
          })
      })
      const mount = (c: AegisConfig): string | undefined => (c.admin === false ? undefined : c.admin.mount)
      if (mount(was.config) !== mount(next))
        issues.push({
          path: 'admin.mount',
          message: "admin.mount: needs a restart here (the framework's router is sealed once it listens)",
        })
    }
    return issues
  }

  /** Parse and check `options` against the generation in force. */
  function check(options: AegisOptions): { next: AegisConfig } | { errors: ConfigIssue[] } {
    let next: AegisConfig
    try {
      next = parseOptions(options)
    } catch (err) {
      return { errors: issuesOf(err) }
    }
    const errors = restartIssues(next)
    return errors.length > 0 ? { errors } : { next }
  }

  function validateConfig(options: AegisOptions): ValidateResult {
    const checked = check(options)
    if ('errors' in checked) return { ok: false, errors: checked.errors }
    const was = now().config
    return {
      ok: true,
      changed: !sameValue(was, checked.next),
      before: configHash(was),
      after: configHash(checked.next),
      diff: configDiff(was, checked.next),
    }
  }

  function reloadNow(options: AegisOptions, how: ReloadOptions): ReloadResult {
    const source = how.source ?? 'code'
    const who = {
      ...(how.actor === undefined ? {} : { actor: how.actor }),
      ...(how.file === undefined ? {} : { file: how.file }),
    }
    const refuse = (errors: ConfigIssue[]): ReloadResult => {
      const generation = now().number
      const listed = errors.map(({ path, message }) => ({ path, message }))
      events.emit('config.refused', { generation, source, ...who, errors: listed })
      logger?.warn(
        { generation, source, ...who, errors: listed },
        'configuration refused; the one in force keeps running',
      )
      return { ok: false, generation, errors }
    }
    if (closing !== undefined) return refuse([{ path: '', message: 'the instance is closed' }])
    const checked = check(options)
    if ('errors' in checked) return refuse(checked.errors)
    const was = now()
    const { next } = checked
    if (sameValue(was.config, next)) {
      const hash = configHash(next)
      return { ok: true, changed: false, generation: was.number, before: hash, after: hash, diff: [] }
    }
    let built: Built
    try {
      built = build(next, was)
    } catch (err) {
      return refuse(issuesOf(err))
    }
    const closed = swap(built)
    const generation = built.gen.number
    const before = configHash(was.config)
    const after = configHash(next)
    const diff = configDiff(was.config, next)
    const updated = built.updates.map((u) => u.name)
    const engines = {
      kept: built.kept.filter((n) => !updated.includes(n)),
      built: built.created.map((e) => e.name),
      updated,
      closed,
    }
    events.emit('config.reloaded', { generation, source, ...who, before, after, diff, engines })
    logger?.info({ generation, source, ...who, before, after, engines }, 'configuration reloaded')
    return { ok: true, changed: true, generation, before, after, diff }
  }

  const first = build(config, undefined)
  swap(first)

  // Entry points that follow the generation in force; a request stays with the one that admitted it.
  const ownerOf = (state: AdmittedState): Flow => (state.owner as Live).flow ?? now().flow
  const flow: Flow = {
    admit: (req) => now().flow.admit(req),
    track: (req, res) => now().flow.track(req, res),
    observe(req, res) {
      const state = states.get(req)
      if (state !== undefined) ownerOf(state).observe(req, res)
    },
    observeAs: (req, state, status) => ownerOf(state).observeAs(req, state, status),
    guard: (req, res) => now().flow.guard(req, res),
    dispatch: (req, res, url, body, via) => now().flow.dispatch(req, res, url, body, via),
    failed,
  }
  const servers = createHttpServers({
    warn,
    count: countReason,
    baseHeaders: () => now().baseHeaders,
    closeTimeout: () => now().config.closeTimeout,
    engines: () => now().engines,
    admit: flow.admit,
    observe: flow.observeAs,
    failed,
    shapeMet: hooks.shapeServers === true,
  })
  const open = (what: string): void => {
    if (closing !== undefined) throw new AegisError(ErrorCodes.CLOSED, `${what} after close()`)
  }
  let reloading: Promise<unknown> = Promise.resolve()

  const aegis: Aegis = {
    get config() {
      return now().config
    },
    get generation() {
      return now().number
    },
    admit: flow.admit,
    dispatch: flow.dispatch,
    guard: flow.guard,
    handler: (app) => createHandler(flow, app, logger, failed),
    get endpoints() {
      return now().endpoints
    },
    events,
    stateOf: (req) => states.get(req),
    applyHeaders: (res, state) => now().writeHeaders(res, state.headers),
    track: flow.track,
    observe: flow.observe,
    routeValidator: createRouteValidator,
    countRejection: count,
    setBodyLimit: bodyLimits.setLimit,
    scrapeMetrics: async () => live.metrics?.scrape(),
    metricsHandler(req, res) {
      if (live.metrics !== undefined) return live.metrics.handle(req, res)
      res.statusCode = 404
      res.end()
    },
    metrics,
    get limiter() {
      return live.limiter
    },
    get ghost() {
      return live.ghost
    },
    get anomaly() {
      return live.anomaly
    },
    get audit() {
      return live.audit
    },
    get admin() {
      return live.admin
    },
    get history() {
      return live.history
    },
    store,
    get gateway() {
      return (live.gateway as NonNullable<EngineApis['gateway']>).gateway
    },
    proxy(options, use) {
      open('proxy()')
      // The ghost engine is built from the options: a later route cannot bring it.
      const ghost = (options as { ghost?: unknown } | undefined)?.ghost
      if (live.ghost === undefined && ghost !== undefined && ghost !== false)
        throw new AegisConfigError([{ path: 'proxy.ghost', message: GHOST_NEEDS_TOP_LEVEL }])
      return (live.gateway as NonNullable<EngineApis['gateway']>).proxy(options, use)
    },
    attach(server, { drain = true, shapeRequests } = {}) {
      open('attach()')
      servers.attach(server, { drain, shapeRequests })
    },
    validateConfig,
    reload(options, how = {}) {
      const run = reloading.then(() => reloadNow(options, how))
      reloading = run.catch(() => {})
      // reloadNow does not throw; a bug of ours is a refusal, never a rejection.
      return run.catch((err: unknown) => ({
        ok: false as const,
        generation: now().number,
        errors: issuesOf(err),
      }))
    },
    close() {
      closing ??= (async () => {
        await servers.close()
        // Retired generations: their requests had closeTimeout to finish, as the servers' had.
        for (const done of [...draining]) done()
        await retired
        // Children in reverse order: the gateway before the breaker bus it publishes on, then the store.
        await closeEngines(now().engines)
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
