/**
 * One proxy route: its upstreams (undici pools and the balancer's view of
 * them), forwarding with retries and breakers, upgrades, run-time targets and
 * fault injection.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { writeSocketRejection } from '../node/socket.js'
import { EventEmitter } from 'node:events'
import { createBalancer, type Outcome, type UpstreamHost } from '../balancer/index.js'
import type { Metrics } from '../metrics/index.js'
import { parseSection, type Logger } from '../options/index.js'
import { pathTraversal } from '../validator/index.js'
import { inspectPath } from '../validator/path.js'
import { bodyTooLarge } from '../validator/body-limits.js'
import { answeredByAegis, cut, writeRawRejection } from '../node/response.js'
import type { Rejection } from '../kernel/types.js'
import type { UpstreamFailure, UpstreamHooks } from '../kernel/engine.js'
import type { AegisEvents, EventBus } from '../kernel/events.js'
import { ROUTE_EVENTS } from './events.js'
import {
  bodyConsumed,
  faultInjected,
  isConnectFailure,
  isReset,
  noUpstream,
  targetRefused,
  upstreamFailure,
  upstreamSaturated,
  upgradeRefused,
  upgradeUnrouted,
} from './answers.js'
import { createTargetGuard, TargetRefusedError } from './targets.js'
import { shareBreakers, type BreakerBus } from '../breaker/index.js'
import {
  exchange,
  upgradeExchange,
  type ExchangeOutcome,
  type HoldDecision,
  type ResponseTaps,
  type UpstreamRequest,
} from './forward.js'
import { connectionTokens, upstreamRequestHeaders } from './headers.js'
import { chaosSchema, type ChaosOptions, type ProxyRouteConfig } from './options.js'
import { backoffMs, IDEMPOTENT, retryAfterMs, RetryBudget, type RetryLease } from './retry.js'
import { bodyOf, buffered, type Body, type ParsedBody } from './body.js'
import { underPrefix } from './prefix.js'
import { pathOf, normalizeTarget } from '../kernel/url.js'
import { guardCallback } from '../kernel/callbacks.js'
import { WarningCodes } from '../kernel/errors.js'
import type { Warn } from '../kernel/warnings.js'
import { basePathOf, classify, destinationOf, queueFor, Upstream, type Destination } from './upstream.js'
import {
  algorithmOf,
  upstreamStatus,
  type ForcedBreaker,
  type RouteStatus,
  type UpstreamChange,
  type UpstreamStatus,
} from './status.js'
import type { UpstreamAdminState } from './events.js'
import { AegisArgumentError } from '../kernel/errors.js'

/** What the gateway needs from the pipeline. */
export interface GatewayDeps {
  /** Whether the socket peer is a trusted proxy (its forwarding headers are kept). */
  peerTrusted(req: IncomingMessage): boolean
  /** The client key of an admitted request (consistent hashing by client). */
  clientKey(req: IncomingMessage): string
  /** Raise the body limit of an admitted request to the route's `maxBodyBytes`. */
  setBodyLimit(req: IncomingMessage, bytes: number): void
  /** Count a rejection the gateway answered. */
  countRejection(rejection: Rejection): void
  readonly metrics: Metrics | undefined
  readonly logger: Logger | undefined
  /** Breaker states shared between instances (routes with `breaker.shared`); needs a Redis store. */
  readonly breakers: BreakerBus | undefined
  /**
   * The instance's event bus: upstream state changes and run-time fault-injection switches
   * are emitted there (gateway/events.ts); the audit trail and `route.events` listen.
   */
  readonly events: EventBus
  /**
   * The engines' gateway hooks, composed into one: `onFailure` may take over a 502/503/504
   * before the gateway answers it, `onResponse` may tap an upstream answer's body.
   */
  readonly upstream: UpstreamHooks
  /** Warn once per code (misconfiguration that shows with traffic). */
  readonly warn: Warn
  /** The answer to a user callback that failed (logged once, not counted), or to a bug of ours. */
  failure(err: unknown): Rejection
}

/** The gateway's events: emitted on the bus (and logged). */
type GatewayEventType =
  'upstream.breaker' | 'upstream.health' | 'upstream.ejected' | 'proxy.chaos' | 'upstream.admin'

/** An upstream failure's answer: a 502, 503 or 504 problem. */

/** A state change of an upstream, as `route.events` emits it. */
export interface UpstreamEvent {
  readonly route: string
  readonly upstream: string
}

/** One proxy route, ready to forward. */
export interface ProxyRoute {
  readonly config: ProxyRouteConfig
  /**
   * Forward `req` when `url` (the request target as seen where the route is
   * mounted) lies under the route's prefix: resolves once the response is
   * over. `false` when it does not (the caller goes on to the app).
   */
  handle(req: IncomingMessage, res: ServerResponse, url: string, parsed?: ParsedBody): Promise<void> | false
  /**
   * Proxy an `Upgrade` request (WebSocket) of an admitted client when `url` lies
   * under the prefix: resolves once the upgrade succeeded or was answered, with the
   * status the client got (101, an upstream's refusal relayed, our 4xx/5xx; 499 when
   * it left first). `false` when the route does not own `url`.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, url: string): Promise<number> | false
  /**
   * `breaker` ({ state: 'open' | 'half-open' | 'closed', origin: 'local' | 'peer' }),
   * `health` ({ healthy }), `ejected` ({ ms }): each with `route` and `upstream`.
   * Fed from the event bus (`upstream.breaker`, … of this route), where the audit
   * log records the same changes.
   */
  readonly events: EventEmitter
  /** Switch fault injection at run time (`false`: off); throws `AegisConfigError` on bad settings. */
  setChaos(chaos: ChaosOptions): void
  /** The route and each upstream's state now (see gateway/status.ts); `shared` is the gateway's to say. */
  status(): Omit<RouteStatus, 'shared'>
  /**
   * An operator's control on the upstreams named `upstream` (`UpstreamStatus.upstream`):
   * drain, enable, or hold its breaker (`breaker`; `auto` lifts the hold). One change per
   * host of that name, each also emitted as `upstream.admin`; `undefined` when the route has
   * no such upstream. Throws `AegisArgumentError` for a breaker control on a route without breakers.
   */
  control(
    upstream: string,
    action: UpstreamChange['action'],
    breaker?: ForcedBreaker,
  ): UpstreamChange[] | undefined
  /**
   * Close every upgraded connection of the route (WebSocket tunnels, and
   * handshakes under way) now, with the upstream connection behind each. Node's
   * `server.closeAllConnections()` does not see them: a socket handed to an
   * `upgrade` listener has left its HTTP machinery.
   */
  endUpgrades(): void
  /** Close the pools and every upgraded connection. */
  close(): Promise<void>
}

/** The part of a status an `upstream.admin` event carries. */
const adminState = (s: UpstreamStatus): UpstreamAdminState => ({
  admin: s.admin,
  breaker: s.breaker?.state ?? null,
  forced: s.breaker?.forced ?? null,
})

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref())

/**
 * Build a proxy route.
 *
 * @example
 * const route = createProxyRoute(proxyRouteSchema.parse({ prefix: '/api', upstreams: ['http://127.0.0.1:8081'] }), deps)
 * if (route.handle(req, res, req.url) === false) next()
 */
export function createProxyRoute(config: ProxyRouteConfig, deps: GatewayDeps): ProxyRoute {
  const events = new EventEmitter()
  const name = config.name ?? config.prefix
  const urls = config.upstreams.map((u) => new URL(u.url))
  /**
   * The event this route is emitting on the bus, while the bus delivers it: how the route's own
   * listeners below tell its events from those of another route of the same name (two
   * `shield.proxy()` mounted at different paths are both named `/`).
   */
  let emitting: object | undefined
  /** A change worth keeping, emitted on the bus: the logs, the metrics, the audit trail and `events` listen there. */
  const publish = <K extends GatewayEventType>(type: K, event: AegisEvents[K]): void => {
    const outer = emitting
    emitting = event
    try {
      deps.events.emit(type, event)
    } finally {
      emitting = outer
    }
  }
  // `events` re-emits this route's upstream changes from the bus; a listener that throws is the
  // bus's to report, never the breaker's or the health check's that changed state.
  const subscriptions = (Object.keys(ROUTE_EVENTS) as (keyof typeof ROUTE_EVENTS)[]).map((type) =>
    deps.events.on(type, (event) => {
      if (event === emitting) events.emit(ROUTE_EVENTS[type], event)
    }),
  )
  const at = (host: UpstreamHost) => ({ route: name, upstream: host.id })
  /** Who made each host's last breaker change (`UpstreamStatus.breaker.origin`). */
  const origins = new Map<UpstreamHost, 'local' | 'peer'>()
  const balancer = createBalancer(
    config.upstreams.map((u, i) => ({
      id: `${(urls[i] as URL).origin}${basePathOf(urls[i] as URL)}`,
      weight: u.weight,
    })),
    config,
    {
      breaker(host, state, held) {
        // A hold is this instance's operator's: not shared (see `control()`).
        const origin = held ? 'local' : (sharing?.changed(host, state) ?? 'local')
        origins.set(host, origin)
        publish('upstream.breaker', {
          ...at(host),
          state,
          origin,
          ...(held ? { forced: true as const } : {}),
        })
      },
      health: (host, healthy) => publish('upstream.health', { ...at(host), healthy }),
      ejected: (host, ms) => publish('upstream.ejected', { ...at(host), ms }),
    },
  )
  const upstreams = balancer.hosts.map((h, i) => new Upstream(urls[i] as URL, h, config, deps.metrics))
  const statusOf = (u: Upstream, now: number): UpstreamStatus =>
    upstreamStatus(config, u, origins.get(u.state), now)
  const sharing =
    config.breaker !== false && config.breaker.shared && deps.breakers !== undefined
      ? shareBreakers(deps.breakers, name, balancer.hosts, config.breaker.rollingCountTimeout)
      : undefined
  const byHost = new Map(upstreams.map((u) => [u.state, u]))
  const { timeouts, retry } = config
  const retryStatuses = new Set(retry === false ? [] : retry.statuses)
  let chaos = config.chaos
  const retried = deps.metrics?.retries(name, 'retried')
  const exhausted = deps.metrics?.retries(name, 'budget-exhausted')
  const budget =
    retry === false
      ? undefined
      : new RetryBudget(retry.budget.percent, retry.budget.minConcurrent, () => {
          if (exhausted !== undefined) exhausted.value++
        })
  /**
   * The engines' say on upstream answers, when one hooks them (`onResponse` taps, `replace`
   * answers a 5xx or a 304 in the upstream's place): asked once here, not per request nor per chunk.
   */
  const taps: ResponseTaps | undefined =
    deps.upstream.onResponse === undefined && deps.upstream.replace === undefined
      ? undefined
      : {
          route: name,
          config,
          hooks: deps.upstream,
          failed: (err) => deps.logger?.error({ err, route: name }, 'upstream response tap failed'),
        }

  balancer.start(async (host, path, timeoutMs) => {
    const up = byHost.get(host) as Upstream
    const r = await up.pool.request({
      path: `${up.basePath}${path}`,
      method: 'GET',
      headers: { host: up.host, 'user-agent': 'aegis-health-check' },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    })
    await r.body.dump()
    return r.statusCode >= 200 && r.statusCode < 400
  })

  const targets =
    config.router === undefined
      ? undefined
      : createTargetGuard({
          allow: config.allowTargets,
          lookup: config.lookup,
          connectTimeout: timeouts.connect,
          connections: config.connections,
          keepAlive: config.keepAlive,
          queue: () => queueFor(config),
        })

  /** The request to send to `to` (an upstream, or a run-time target) for this client request. */
  function outgoing(
    req: IncomingMessage,
    to: Destination,
    rest: string,
    body: Body | undefined,
    hold?: HoldDecision,
  ): UpstreamRequest {
    let path = `${to.basePath}${config.rewritePrefix}${rest}`
    if (!path.startsWith('/')) path = `/${path}`
    const { headers, requestId } = upstreamRequestHeaders(req, {
      peer: req.socket.remoteAddress ?? '',
      peerTrusted: deps.peerTrusted(req),
      host:
        config.host === 'upstream'
          ? to.host
          : config.host === 'preserve'
            ? (req.headers.host ?? to.host)
            : config.host,
      underscores: config.underscoreHeaders,
      requestId: config.requestId,
      contentLength: body?.contentLength,
      reserialized: body?.reserialized === true,
    })
    return {
      dispatcher: to.pool,
      origin: to.origin,
      path,
      method: req.method ?? 'GET',
      headers,
      body: body?.body ?? null,
      headersTimeout: timeouts.headers,
      bodyTimeout: timeouts.body,
      sendTimeout: timeouts.send,
      requestId:
        config.requestId === false || requestId === undefined
          ? undefined
          : { name: config.requestId, value: requestId },
      hold,
      req,
      taps,
    }
  }

  /** One request to the target `router(req)` chose: checked, never retried, no balancer. */
  async function forwardToTarget(
    req: IncomingMessage,
    res: ServerResponse,
    rest: string,
    body: Body,
    target: string | URL,
  ): Promise<void> {
    const guard = targets as NonNullable<typeof targets>
    // Refused on its URL, or on the address it resolved to when connecting.
    const refuse = (err: TargetRefusedError): void => {
      deps.logger?.warn({ route: name, reason: err.message }, 'run-time target refused')
      answer(req, res, targetRefused)
    }
    const url = guard.check(target)
    if (url instanceof TargetRefusedError) return refuse(url)
    const { pool, queue } = guard.poolFor(url)
    const granted = queue.acquire(res)
    if (granted !== true && !(await granted)) return fail(req, res, upstreamSaturated)
    let outcome: ExchangeOutcome
    try {
      outcome = await exchange(res, outgoing(req, destinationOf(url, pool, queue), rest, body))
    } finally {
      queue.release()
    }
    if (outcome.responded || outcome.clientAborted) return
    if (outcome.error instanceof TargetRefusedError) return refuse(outcome.error)
    return fail(req, res, upstreamFailure(outcome.error), outcome.error)
  }

  /**
   * The one way out of an upstream failure — every 502, 503 and 504 of the route (4xx refusals,
   * fault injection and our own 500s are answers, not upstream failures, and go through
   * `answer()`). The engines' `onFailure` hook may take it over (the ghost cache serves
   * there); when none is set, or it says no, throws or rejects, the gateway answers `rejection`.
   * A client that left gets nothing, and no hook is asked for it; nor is one asked for a
   * response Aegis already answered (a 413 sent while the upload streamed upstream).
   *
   * Counted as a rejection only when the gateway answers it: an engine that answered counts
   * its own serve, and the upstream's failure itself was counted where it happened (balancer,
   * breaker, upstream metrics), whoever answers. Returns a promise only while a hook's
   * answer is pending: `handle()` resolves once the response is settled.
   */
  function fail(
    req: IncomingMessage,
    res: ServerResponse,
    rejection: Rejection,
    error?: unknown,
  ): void | Promise<void> {
    // An unread upload would stall the connection: let it drain into nothing, whoever answers.
    if (!req.readableEnded) req.resume()
    if (res.destroyed || answeredByAegis(res)) return
    if (deps.upstream.onFailure === undefined) return answerFailure(res, rejection)
    const failure: UpstreamFailure = {
      route: name,
      config,
      status: rejection.status as UpstreamFailure['status'],
      rejection,
      ...(error === undefined ? {} : { error }),
    }
    let taken: boolean | Promise<boolean>
    try {
      taken = deps.upstream.onFailure(req, res, failure)
    } catch (err) {
      return failureHookFailed(res, rejection, err)
    }
    if (taken === true) return
    if (typeof (taken as Promise<boolean> | undefined)?.then !== 'function')
      return answerFailure(res, rejection)
    return Promise.resolve(taken).then(
      (answered) => (answered === true ? undefined : answerFailure(res, rejection)),
      (err: unknown) => failureHookFailed(res, rejection, err),
    )
  }

  /**
   * Whether an engine's `onRequest` answered `req` (a promise only while a hook's answer is
   * pending); one that throws or rejects did not, unless it started an answer (logged).
   */
  function askFirst(req: IncomingMessage, res: ServerResponse): boolean | Promise<boolean> {
    const failed = (err: unknown): boolean => {
      deps.logger?.error({ err, route: name }, 'upstream onRequest hook failed')
      return res.headersSent || res.writableEnded
    }
    const answered = (yes: boolean): boolean => {
      // Answered without reading the upload: let it drain into nothing.
      if (yes && !req.readableEnded) req.resume()
      return yes
    }
    try {
      const taken = (deps.upstream.onRequest as NonNullable<UpstreamHooks['onRequest']>)(req, res, {
        route: name,
        config,
      })
      if (taken === true || taken === false) return answered(taken)
      return Promise.resolve(taken).then((yes) => answered(yes === true), failed)
    } catch (err) {
      return failed(err)
    }
  }

  function failureHookFailed(res: ServerResponse, rejection: Rejection, err: unknown): void {
    deps.logger?.error({ err, route: name }, 'upstream onFailure hook failed')
    answerFailure(res, rejection)
  }

  /**
   * The gateway's own answer to a failure no hook took: once. A client that left meanwhile gets
   * nothing; a hook that answered in full and said it did not is believed on its response
   * (ended: nothing is written twice); one that started an answer and gave up leaves a
   * response no status can finish: it is cut.
   */
  function answerFailure(res: ServerResponse, rejection: Rejection): void {
    if (res.destroyed || res.writableEnded) return
    if (res.headersSent) return cut(res)
    deps.countRejection(rejection)
    writeRawRejection(res, rejection)
  }

  function answer(req: IncomingMessage, res: ServerResponse, r: Rejection): void {
    deps.countRejection(r)
    writeRawRejection(res, r)
    // An unread upload would stall the connection: let it drain into nothing.
    if (!req.readableEnded) req.resume()
  }

  /** `answer()`, as `handle()` returns it: the request is settled. */
  function answered(req: IncomingMessage, res: ServerResponse, r: Rejection): Promise<void> {
    answer(req, res, r)
    return Promise.resolve()
  }

  /**
   * One attempt on one host, through its breaker; `undefined` when the breaker refused it,
   * `false` when no connection to the host could be had in time (see `ConnectionQueue`).
   */
  async function attempt(
    up: Upstream,
    req: IncomingMessage,
    res: ServerResponse,
    rest: string,
    body: Body,
    hold: HoldDecision | undefined,
  ): Promise<ExchangeOutcome | undefined | false> {
    // Before the breaker: a wait for a connection says nothing about the upstream's health.
    const granted = up.queue.acquire(res)
    if (granted !== true && !(await granted)) return false
    try {
      const request = outgoing(req, up, rest, body, hold)
      const host = up.state
      const breaker = host.breaker
      // It may have opened since the pick (in half-open, only one request is its probe): nothing sent.
      if (breaker !== undefined && !breaker.admits()) return undefined
      const started = performance.now()
      balancer.begin(host)
      const outcome = await exchange(res, request) // never rejects: a failure is in the outcome
      const kind: Outcome = classify(outcome, req.complete)
      breaker?.record(kind)
      const ms = performance.now() - started
      balancer.end(host, kind, ms)
      up.series?.request(kind, ms / 1000)
      deps.upstream.settled?.(name, kind, ms)
      return outcome
    } finally {
      up.queue.release()
    }
  }

  async function forward(
    req: IncomingMessage,
    res: ServerResponse,
    rest: string,
    parsed: ParsedBody,
  ): Promise<void> {
    if (config.maxBodyBytes !== undefined) {
      const cl = Number(req.headers['content-length'] ?? 0)
      if (cl > config.maxBodyBytes) return answer(req, res, bodyTooLarge(config.maxBodyBytes))
      deps.setBodyLimit(req, config.maxBodyBytes)
    }
    // An engine may answer before anything is forwarded (the ghost cache's fresh hit), fault injection included.
    if (deps.upstream.onRequest !== undefined) {
      const answered = askFirst(req, res)
      if (answered === true || (answered !== false && (await answered))) return
    }
    if (chaos !== false) {
      if (chaos.abort !== undefined && Math.random() * 100 < chaos.abort.percent)
        return answer(req, res, faultInjected(chaos.abort.status))
      if (chaos.delay !== undefined && Math.random() * 100 < chaos.delay.percent) await sleep(chaos.delay.ms)
    }
    let body = bodyOf(req, parsed)
    if (body === undefined) return answer(req, res, bodyConsumed)
    const target = router?.(req)
    if (target !== undefined) return forwardToTarget(req, res, rest, body, target)
    const method = req.method ?? 'GET'
    const mayRetry =
      retry !== false &&
      retry.attempts > 0 &&
      (IDEMPOTENT.has(method) || req.headers['idempotency-key'] !== undefined)
    // A small body is read first, so that a retry can send it again.
    if (
      mayRetry &&
      body.body === req &&
      body.contentLength !== undefined &&
      body.contentLength <= retry.maxBufferBytes
    )
      body = { body: await buffered(req), contentLength: body.contentLength }
    const deadline = performance.now() + (retry === false ? 0 : retry.deadline)
    const clientKey = deps.clientKey(req)
    let host: UpstreamHost | undefined // the host of the last attempt
    let tried: Set<UpstreamHost> | undefined // hosts tried so far, from the second attempt on
    let retries = 0
    let refusals = 0
    let last: ExchangeOutcome | undefined
    // This request's share of the retry budget: a retry holds a slot from the moment it is decided
    // until its attempt ends; whatever is still held goes back in `finally`, however the request ends.
    const lease = budget?.lease()
    try {
      for (;;) {
        // Another host when there is one; the same one otherwise.
        if (host !== undefined) (tried ??= new Set()).add(host)
        host =
          balancer.pick(req, clientKey, tried) ??
          (tried !== undefined ? balancer.pick(req, clientKey) : undefined)
        if (host === undefined)
          // A held 5xx was going to be retried: say so, rather than blame the connection.
          return last === undefined || last.held
            ? fail(req, res, noUpstream)
            : fail(req, res, upstreamFailure(last.error), last.error)
        const replayable = body.body !== req
        const canRetry = mayRetry && retries < retry.attempts
        let waitMs = 0
        // Hold back a retryable answer only when a retry is sure to follow: its budget slot is taken here.
        const hold: HoldDecision | undefined =
          canRetry && replayable
            ? (status, headers) => {
                if (!retryStatuses.has(status)) return false
                const after = retryAfterMs(headers['retry-after'])
                waitMs = Math.max(after ?? 0, backoffMs(retries + 1, retry.backoff.base, retry.backoff.max))
                return performance.now() + waitMs <= deadline && (lease as RetryLease).take()
              }
            : undefined
        const outcome = await attempt(byHost.get(host) as Upstream, req, res, rest, body, hold)
        lease?.attemptEnded()
        if (outcome === false) return fail(req, res, upstreamSaturated)
        if (outcome === undefined) {
          // Its breaker refused at the last moment: pick again, a bounded number of times.
          if (++refusals > upstreams.length) return fail(req, res, noUpstream)
          continue
        }
        last = outcome
        if (outcome.responded || outcome.clientAborted) return
        if (!outcome.held) {
          // Failed before any answer. Not reached at all: another host may take it if the body can be
          // sent again. Reset before answering: an idempotent request with a replayable body may go again.
          const again =
            canRetry &&
            performance.now() < deadline &&
            ((isConnectFailure(outcome.error) && (replayable || !req.readableDidRead)) ||
              (isReset(outcome.error) && replayable))
          if (!again || lease?.take() !== true)
            return fail(req, res, upstreamFailure(outcome.error), outcome.error)
          waitMs = backoffMs(retries + 1, retry.backoff.base, retry.backoff.max)
        }
        lease?.nextAttempt()
        retries++
        if (retried !== undefined) retried.value++
        if (waitMs > 0) await sleep(waitMs)
        if (res.destroyed) return
      }
    } finally {
      // Before a failure hook's answer (returned above, still pending) settles: serving from
      // elsewhere holds no retry slot.
      lease?.release()
    }
  }

  /**
   * The protocols of an `Upgrade` field this route proxies (`websocket`, `websocket/13`…), as a field
   * value for the upstream; `undefined` when it names none. Only these reach the upstream: a request
   * offering `h2c, websocket` is sent on with `websocket` (the field is hop-by-hop, RFC 9110 §7.6.1).
   */
  function allowedUpgrade(field: string | undefined): string | undefined {
    if (field === undefined) return undefined
    let allowed: string | undefined
    for (const offered of field.split(',')) {
      const protocol = offered.trim()
      const slash = protocol.indexOf('/')
      const name = (slash < 0 ? protocol : protocol.slice(0, slash)).toLowerCase()
      if (config.upgrades.includes(name))
        allowed = allowed === undefined ? protocol : `${allowed}, ${protocol}`
    }
    return allowed
  }

  /** Client sockets of upgrades, from the handshake on until they close (see `endUpgrades()`). */
  const tunnels = new Set<Duplex>()

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, rest: string): Promise<number> {
    if (!socket.destroyed) {
      tunnels.add(socket)
      socket.once('close', () => tunnels.delete(socket))
    }
    /** Answer `r`; the status the client got (nginx's 499 when it left first), for `observe`. */
    const refuse = (r: Rejection): number => {
      deps.countRejection(r)
      if (socket.destroyed) return 499
      writeSocketRejection(socket, r)
      return r.status
    }
    const protocol = allowedUpgrade(req.headers.upgrade)
    if (protocol === undefined) return refuse(upgradeRefused)
    const host = balancer.pick(req, deps.clientKey(req))
    if (host === undefined) return refuse(noUpstream)
    const up = byHost.get(host) as Upstream
    // The handshake holds a connection of the pool (undici takes the socket out of it on a 101).
    const granted = up.queue.acquire(socket)
    if (granted !== true && !(await granted)) return refuse(upstreamSaturated)
    const started = performance.now()
    balancer.begin(host)
    let upgraded: Awaited<ReturnType<typeof upgradeExchange>>
    try {
      upgraded = await upgradeExchange(socket, head, outgoing(req, up, rest, undefined), protocol)
    } finally {
      up.queue.release()
    }
    const { status, relayed, error } = upgraded
    // An upstream that answered works, unless it answered 5xx (relayed or not: a body too long to relay is a 502).
    const kind: Outcome =
      status >= 500
        ? 'server-error'
        : status > 0
          ? 'success'
          : isConnectFailure(error)
            ? 'connect-error'
            : socket.destroyed
              ? 'cancelled'
              : 'error'
    const ms = performance.now() - started
    balancer.end(host, kind, ms)
    up.series?.request(kind, ms / 1000)
    deps.upstream.settled?.(name, kind, ms)
    return relayed ? status : refuse(upstreamFailure(error))
  }

  const router = config.router === undefined ? undefined : guardCallback('proxy.router', config.router)

  /**
   * An upgrade this route would proxy, met on the plain-request path: no `upgrade` listener took it
   * (no `attach(server)`, or on Express a route mounted by path, which the server's `upgrade` event
   * never reaches). Forwarded as plain HTTP it would come back a silent 200; refuse it, and say why.
   */
  const unroutedUpgrade = (req: IncomingMessage): boolean => {
    if (allowedUpgrade(req.headers.upgrade) === undefined) return false
    if (connectionTokens(req.headers.connection)?.has('upgrade') !== true) return false
    deps.warn(
      WarningCodes.UPGRADE_UNROUTED,
      `A WebSocket upgrade reached proxy route ${name} as a plain request and was refused: give the route its prefix, mount it at the root (Express: app.use(shield.proxy({ prefix, … }))) and call attach(server).`,
    )
    return true
  }

  /** The part of `url` this route forwards, or a refusal for a path that climbs out of the prefix. */
  const routed = (url: string): string | undefined | typeof pathTraversal => {
    const rest = underPrefix(config.prefix, url)
    if (rest === undefined) return undefined
    // The prefix must stay the floor: no dot-dot segment in any decoding may climb out of it.
    // Forwarded without its single-dot segments: the path the limiter's route policies matched.
    return inspectPath(pathOf(rest)) === 'ok' ? normalizeTarget(rest) : pathTraversal
  }

  return {
    config,
    events,
    upgrade(req, socket, head, url) {
      const rest = routed(url)
      if (rest === undefined) return false
      if (typeof rest !== 'string') {
        deps.countRejection(rest)
        writeSocketRejection(socket, rest)
        return Promise.resolve(rest.status)
      }
      return upgrade(req, socket, head, rest)
    },
    handle(req, res, url, parsed) {
      const rest = routed(url)
      if (rest === undefined) return false
      if (typeof rest !== 'string') return answered(req, res, rest)
      if (unroutedUpgrade(req)) return answered(req, res, upgradeUnrouted)
      // A user callback (router, balancer.hash) that throws fails this request alone: a 500 problem.
      return forward(req, res, rest, parsed).catch((err: unknown) => answer(req, res, deps.failure(err)))
    },
    setChaos(options) {
      chaos = parseSection(chaosSchema, options, ['proxy', 'chaos'])
      publish('proxy.chaos', { route: name, chaos })
    },
    status() {
      const now = performance.now()
      return {
        name,
        prefix: config.prefix,
        balancer: algorithmOf(config),
        upstreams: upstreams.map((u) => statusOf(u, now)),
      }
    },
    control(upstream, action, breaker) {
      const matched = upstreams.filter((u) => u.state.id === upstream)
      if (matched.length === 0) return undefined
      if (action === 'force-breaker' && config.breaker === false)
        throw new AegisArgumentError(
          `gateway: route ${JSON.stringify(name)} has no circuit breakers (breaker: false)`,
        )
      return matched.map((u) => {
        const host = u.state
        const before = statusOf(u, performance.now())
        let changed: boolean
        if (action === 'force-breaker') {
          // Held on this instance only: the shared-breaker bus (pub/sub) keeps no state, so a
          // hold sent over it would be missed by instances started later, and a lost `auto`
          // would leave a peer held for good. An operator holds each instance through its own API.
          const b = host.breaker as NonNullable<UpstreamHost['breaker']>
          const wanted = breaker === 'auto' ? undefined : breaker
          changed = b.held !== wanted
          b.hold(wanted)
        } else changed = host.drain(action === 'drain')
        const after = statusOf(u, performance.now())
        publish('upstream.admin', {
          ...at(host),
          action,
          ...(action === 'force-breaker' && breaker !== undefined ? { breaker } : {}),
          changed,
          before: adminState(before),
          after: adminState(after),
        })
        return { route: name, upstream: host.id, action, changed, before, after }
      })
    },
    endUpgrades() {
      // Destroying the client's side ends the upstream's too (upgradeExchange ties the two), and a
      // handshake under way is aborted. WebSocket has its own closing handshake, but frames are not
      // parsed here: a close frame injected mid-frame would corrupt the stream, so the TCP connection
      // is what ends (clients see code 1006 and reconnect, as after any proxy restart).
      for (const socket of tunnels) socket.destroy()
      tunnels.clear()
    },
    async close() {
      for (const unsubscribe of subscriptions) unsubscribe()
      this.endUpgrades()
      sharing?.close()
      balancer.close()
      for (const u of upstreams) u.queue.clear()
      await Promise.all([...upstreams.map((u) => u.pool.close()), targets?.close()])
    },
  }
}
