/**
 * The per-request flow, composed from the engines' stages: admit (in table order,
 * until one rejects), conclude (the `onReject` hook, counting, `Server-Timing`),
 * observe (when the response is over), and dispatch (admit → track → headers →
 * rejection → endpoints → forwarding → the app).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Admission, Endpoint, Engine } from '../kernel/engine.js'
import type { Logger } from '../kernel/logger.js'
import type { AdmittedState, AegisRequestState, HeaderList, Rejection, RouteOf } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import type { ClientResolver } from '../client/index.js'
import type { HttpServer } from '../http-server/index.js'
import { AEGIS_ROUTE, UNMATCHED_ROUTE, type createRouteLearner } from '../metrics/index.js'
import type { RejectHook, SkipFunction } from '../options/index.js'
import { checkedRejection } from '../options/reject.js'
import { pathOf } from '../kernel/url.js'
import type { StateSlots } from './state.js'

/** What the flow is composed from. */
export interface FlowDeps {
  readonly engines: readonly Engine[]
  readonly states: StateSlots<AdmittedState>
  readonly clients: ClientResolver
  /** The fields every answer carries. */
  readonly baseHeaders: HeaderList
  readonly maxBodyBytes: number
  readonly skip: SkipFunction | undefined
  readonly onReject: RejectHook | undefined
  readonly serverTiming: boolean
  /** Route templates learned from paths (one per instance: a reload keeps them). */
  readonly learner: RouteLearner
  /** The generation this flow admits for: its count of requests admitted and not yet observed. */
  readonly live: Live
  readonly routeOf: RouteOf | undefined
  /** Where a request's own response is linked (Express' `req.res`); the state keeps it otherwise. */
  readonly responseOf: ((req: IncomingMessage) => ServerResponse | undefined) | undefined
  /** The request target the guards see where the framework rewrote `req.url` (a mount path). */
  readonly wholeTarget: ((req: IncomingMessage) => string | undefined) | undefined
  readonly logger: Logger | undefined
  readonly warn: Warn
  count: (rejection: Rejection) => void
  /** The answer to a throw, not counted. */
  failure: (err: unknown) => Rejection
  /** A request arrived through `server`. */
  met: (server: HttpServer) => void
  /** `close()` began: answers say `Connection: close`. */
  draining: () => boolean
  /** Write the admitted fields on a response (and drop `X-Powered-By`). */
  writeHeaders: (res: ServerResponse, headers: HeaderList) => void
}

/** Something that may take an admitted request before the app (a proxy route, the gateway). */
export interface Forwarder {
  handle(req: IncomingMessage, res: ServerResponse, url: string, body?: unknown): Promise<void> | false
}

/**
 * What `dispatch` leaves to the adapter: the state (write `state.rejection` if set, else
 * call the app), or `undefined` when Aegis answered itself (an endpoint, a proxy route).
 */
export type Dispatched = AegisRequestState | undefined

/** The flow of one Aegis instance. */
export interface Flow {
  admit: (req: IncomingMessage) => AdmittedState | Promise<AdmittedState>
  track: (req: IncomingMessage, res: ServerResponse) => void
  observe: (req: IncomingMessage, res: ServerResponse) => void
  /** Observe a request whose response is not Node's (an upgrade's handshake). */
  observeAs: (req: IncomingMessage, state: AdmittedState, status: number) => void
  guard: (req: IncomingMessage, res: ServerResponse) => AegisRequestState | Promise<AegisRequestState>
  dispatch: (
    req: IncomingMessage,
    res: ServerResponse,
    url?: string,
    body?: unknown,
    via?: Forwarder,
  ) => Dispatched | Promise<Dispatched>
  /** The answer to a throw, counted. */
  failed: (err: unknown) => Rejection
}

/**
 * The requests of one configuration generation: admitted and not yet observed. A retired
 * generation's engines are closed once it is idle.
 */
export interface Live {
  inflight: number
  /** Set when the generation is retired: called when its last request is observed. */
  idle: (() => void) | undefined
  /** The flow of the generation (set once composed). */
  flow: Flow | undefined
}

type RouteLearner = ReturnType<typeof createRouteLearner>

const CLOSE: HeaderList = [['connection', 'close']]

/** The path of a request target in origin or absolute form. */
const targetPath = (url: string): string => {
  if (url.charCodeAt(0) === 0x2f) return pathOf(url)
  try {
    return new URL(url).pathname
  } catch {
    return pathOf(url)
  }
}

/**
 * @example
 * const flow = createFlow(deps)
 * const state = flow.admit(req)
 */
export function createFlow(deps: FlowDeps): Flow {
  const { engines, states, clients, baseHeaders, skip, onReject, logger, responseOf, wholeTarget } = deps
  const admitters = engines.filter((e) => e.admit !== undefined)
  const observers = engines.filter((e) => e.observe !== undefined)
  const forwarders = engines.filter((e) => e.forward !== undefined)
  const responders = engines.filter((e) => e.respond !== undefined)
  const endpoints: readonly Endpoint[] = engines.flatMap((e) => e.endpoints ?? [])
  const { learner, live } = deps
  const failed = (err: unknown): Rejection => {
    const rejection = deps.failure(err)
    deps.count(rejection)
    return rejection
  }

  const newState = (client: AdmittedState['client'], skipped: boolean, startedAt: number): AdmittedState => {
    live.inflight++
    return {
      client,
      headers: baseHeaders,
      rejection: undefined,
      skipped,
      startedAt,
      route: undefined,
      bodyLimit: deps.maxBodyBytes,
      input: undefined,
      slot: false,
      res: undefined,
      owner: live,
    }
  }

  function admit(req: IncomingMessage): AdmittedState | Promise<AdmittedState> {
    const existing = states.get(req)
    if (existing !== undefined) return existing
    const startedAt = performance.now()
    // Never throws: a failing user callback (or a bug of ours) is answered 500 instead.
    try {
      const whole = wholeTarget?.(req)
      if (whole === undefined || whole === req.url) return guardAll(req, startedAt)
      // The guards read the whole target, synchronously (Express strips its mount path off `req.url`).
      const stripped = req.url
      req.url = whole
      try {
        return guardAll(req, startedAt)
      } finally {
        req.url = stripped
      }
    } catch (err) {
      const rejection = failed(err)
      let state = states.get(req)
      if (state === undefined) {
        state = newState(clients.resolve(req), false, startedAt)
        states.set(req, state)
      }
      state.rejection = rejection
      state.headers = baseHeaders
      return state
    }
  }

  function guardAll(req: IncomingMessage, startedAt: number): AdmittedState | Promise<AdmittedState> {
    const server = (req.socket as { server?: HttpServer | null } | null)?.server
    if (server != null) deps.met(server)
    const client = clients.resolve(req)
    const skipped = skip !== undefined && skip(req) === true
    const state = newState(client, skipped, startedAt)
    states.set(req, state)
    return skipped ? conclude(req, state) : run(req, state, 0)
  }

  /** Ask the engines from `from` on; a promise from the first one that needs a shared store. */
  function run(
    req: IncomingMessage,
    state: AdmittedState,
    from: number,
  ): AdmittedState | Promise<AdmittedState> {
    for (let i = from; i < admitters.length; i++) {
      const engine = admitters[i] as Engine
      const said = (engine.admit as NonNullable<Engine['admit']>)(req, state)
      if (said === undefined) continue
      if ('then' in said)
        return said.then(
          // A body that outgrew its limit while the store decided was answered 413 meanwhile: that stands.
          (later) =>
            state.rejection !== undefined
              ? state
              : apply(state, later)
                ? conclude(req, state)
                : run(req, state, i + 1),
          (err: unknown) => {
            // Engines handle their stores' errors themselves; anything else is a bug: admit, and say so.
            logger?.error({ err, engine: engine.name }, `${engine.name} failed; request admitted`)
            return state.rejection !== undefined ? state : run(req, state, i + 1)
          },
        )
      if (apply(state, said)) break
    }
    return conclude(req, state)
  }

  /** Take what an engine said; `true` when it rejected. */
  function apply(state: AdmittedState, said: Admission): boolean {
    if (said === undefined) return false
    if ('status' in said) {
      state.rejection = said
      return true
    }
    const { headers, rejection } = said
    if (headers !== undefined && headers.length > 0)
      state.headers = state.headers.length === 0 ? headers : [...state.headers, ...headers]
    if (rejection === undefined) return false
    state.rejection = rejection
    return true
  }

  /** Finish admission once every guard has spoken. */
  function conclude(req: IncomingMessage, state: AdmittedState): AdmittedState {
    let rejection = state.rejection
    if (rejection !== undefined && rejection.status >= 400) {
      // A preflight answer is not a rejection: the hook and the counter see refusals only.
      if (onReject !== undefined) {
        try {
          rejection = checkedRejection(onReject(rejection, req), rejection, deps.warn)
        } catch (err) {
          rejection = deps.failure(err)
          state.headers = baseHeaders
        }
      }
      state.rejection = rejection
      deps.count(rejection)
    }
    if (deps.draining()) state.headers = [...state.headers, ...CLOSE]
    if (deps.serverTiming) {
      const ms = performance.now() - state.startedAt
      state.headers = [...state.headers, ['server-timing', `aegis;dur=${ms.toFixed(3)};desc="Aegis guards"`]]
    }
    return state
  }

  // One object for every observation: observers run synchronously and keep nothing.
  const seen = { status: 0, ms: 0 }
  function observeAs(req: IncomingMessage, state: AdmittedState, status: number): void {
    try {
      seen.status = status
      seen.ms = performance.now() - state.startedAt
      // Requests Aegis answered itself never reached a router: one label for them all.
      if (state.rejection !== undefined) state.route = AEGIS_ROUTE
      else {
        const matched = state.route ?? deps.routeOf?.(req)
        if (matched !== undefined) state.route = learner.bound(matched)
        else state.route = status === 404 ? UNMATCHED_ROUTE : learner.template(req.url ?? '/')
      }
      for (const engine of observers) (engine.observe as NonNullable<Engine['observe']>)(req, state, seen)
    } catch (err) {
      // A response's 'close' listener: nothing may escape it.
      failed(err)
    }
    if (--live.inflight === 0 && live.idle !== undefined) live.idle()
  }
  function observe(req: IncomingMessage, res: ServerResponse): void {
    const state = states.get(req)
    // nginx's 499, "client closed request": the response never finished.
    if (state !== undefined) observeAs(req, state, res.writableFinished ? res.statusCode : 499)
  }
  // One listener function for every response: `this` is the response.
  function onResponseClose(this: ServerResponse): void {
    if (this.req !== undefined) observe(this.req, this)
  }
  function track(req: IncomingMessage, res: ServerResponse): void {
    const state = states.get(req)
    if (state === undefined) return
    // Admitted by an earlier generation (mounted twice, a reload in between): its own flow observes it.
    if (state.owner !== live) return (state.owner as Live).flow?.track(req, res)
    if (responseOf === undefined) state.res = res
    res.on('close', onResponseClose) // emitted once per response
  }

  const endpointOf = (req: IncomingMessage, url: string): Endpoint | undefined => {
    if (endpoints.length === 0) return undefined
    const path = targetPath(url)
    return endpoints.find(
      (e) =>
        e.method === req.method && (e.path === path || (e.prefix === true && path.startsWith(`${e.path}/`))),
    )
  }

  function serve(
    req: IncomingMessage,
    res: ServerResponse,
    state: AdmittedState,
    url: string | undefined,
    body: unknown,
    via: Forwarder | undefined,
  ): Dispatched | Promise<Dispatched> {
    deps.writeHeaders(res, state.headers)
    if (state.rejection !== undefined) return state
    const target = url ?? req.url ?? '/'
    if (via !== undefined) return forwarded(via.handle(req, res, target, body), state)
    const endpoint = endpointOf(req, target)
    if (endpoint !== undefined) {
      const served = endpoint.handle(req, res)
      return served === undefined ? undefined : served.then(() => undefined)
    }
    for (const engine of forwarders) {
      const taken = (engine.forward as NonNullable<Engine['forward']>)(req, res, target, body)
      if (taken !== false) return forwarded(taken, state)
    }
    toApp(req, res, state)
    return state
  }
  /** The request goes on to the app: the engines that wrap its response do. */
  function toApp(req: IncomingMessage, res: ServerResponse, state: AdmittedState): void {
    for (const engine of responders) (engine.respond as NonNullable<Engine['respond']>)(req, res, state)
  }
  /**
   * Where the framework routes endpoints and proxy routes itself (Fastify): whether an admitted
   * request goes to the app, told by its target, which none of them claims.
   */
  function guarded(req: IncomingMessage, res: ServerResponse, state: AdmittedState): AdmittedState {
    deps.writeHeaders(res, state.headers)
    if (responders.length === 0 || state.rejection !== undefined) return state
    const target = req.url ?? '/'
    if (endpointOf(req, target) === undefined && !forwarders.some((e) => e.claims?.(target) === true))
      toApp(req, res, state)
    return state
  }
  const forwarded = (taken: Promise<void> | false, state: AdmittedState): Dispatched | Promise<Dispatched> =>
    taken === false ? state : taken.then(() => undefined)

  return {
    admit,
    track,
    observe,
    observeAs,
    failed,
    guard(req, res) {
      const admitted = admit(req)
      track(req, res)
      return admitted instanceof Promise
        ? admitted.then((state) => guarded(req, res, state))
        : guarded(req, res, admitted)
    },
    dispatch(req, res, url, body, via) {
      const existing = states.get(req)
      // Admitted once, however mounted: a proxy route mounted after it forwards, anything else goes on.
      if (existing !== undefined)
        return via === undefined
          ? existing
          : forwarded(via.handle(req, res, url ?? req.url ?? '/', body), existing)
      const admitted = admit(req)
      track(req, res)
      return admitted instanceof Promise
        ? admitted.then((state) => serve(req, res, state, url, body, via))
        : serve(req, res, admitted, url, body, via)
    },
  }
}
