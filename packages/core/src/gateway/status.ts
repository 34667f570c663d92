/**
 * What the gateway shows of its routes and upstreams, and the operator's controls on them
 * (`aegis.gateway.status()`, `drain()`, `enable()`, `forceBreaker()`): the data contract of
 * the admin API's routes endpoints. Every shape here is plain JSON (no `undefined`, no
 * `Date`, no `Infinity`: absent values are `null`, times are ISO 8601 strings). Field names
 * are stable; new fields may be added, none renamed or removed without a major version.
 *
 * Anchors: HAProxy's Runtime API (`show servers state`, `set server state ready|drain`) and
 * Envoy's admin `/clusters` (health flags, weights, active requests per host).
 */
import type { UpstreamHost } from '../balancer/index.js'
import type { BreakerState } from '../breaker/index.js'
import type { ProxyRouteConfig } from './options.js'
import type { Upstream } from './upstream.js'

/** A breaker setting an operator may force (`auto`: lift the hold, the breaker decides again). */
export type ForcedBreaker = 'open' | 'closed' | 'auto'

/** One upstream's breaker, as `UpstreamStatus.breaker` shows it. */
export interface BreakerStatus {
  /** The state requests meet (a forced one while held). */
  readonly state: BreakerState
  /** An operator's hold (`forceBreaker()`), or `null`: the breaker decides. */
  readonly forced: 'open' | 'closed' | null
  /**
   * Who made the last change: `local` (this instance's own requests, or its operator), `peer`
   * (another instance, `breaker.shared`); `null` before any change.
   */
  readonly origin: 'local' | 'peer' | null
  /** The rolling window's counts (opossum's `stats`): requests asked about, outcomes, refusals. */
  readonly window: {
    readonly fires: number
    readonly successes: number
    readonly failures: number
    readonly rejects: number
  }
}

/** One upstream of a route, as `RouteStatus.upstreams` lists it. */
export interface UpstreamStatus {
  /** The upstream as every log line, metric and event names it: origin and base path (never credentials). */
  readonly upstream: string
  /** `ready`: in rotation; `drain`: picked for no new request (`drain()`), in-flight ones finish. */
  readonly admin: 'ready' | 'drain'
  /** Whether the balancer would pick it now (ready, healthy, not ejected, breaker admitting). */
  readonly available: boolean
  /** The configured weight, and the weight it is picked with now (lower during slow start). */
  readonly weight: number
  readonly effectiveWeight: number
  readonly health: {
    /** Whether active health checks run on the route. */
    readonly checked: boolean
    /** The active checks' verdict (always `true` without checks). */
    readonly healthy: boolean
    /** Ejected by passive outlier detection, until when (ISO 8601), and how many times so far. */
    readonly ejected: boolean
    readonly ejectedUntil: string | null
    readonly ejections: number
  }
  /** `null` on a route without breakers (`breaker: false`). */
  readonly breaker: BreakerStatus | null
  /** Requests sent to it and not finished. */
  readonly inflight: number
  /** Its connection queue: connections in use (of `connections`), requests waiting (of `maxPending`). */
  readonly queue: {
    readonly active: number
    readonly connections: number
    readonly pending: number
    readonly maxPending: number
  }
  /** Since the route was built: requests finished (cancelled ones included) and failed (5xx, errors, timeouts). */
  readonly totals: { readonly requests: number; readonly failures: number }
}

/** One proxy route, as `aegis.gateway.status()` lists it. */
export interface RouteStatus {
  /** The route's name (`name`, else its prefix): what the controls take. */
  readonly name: string
  readonly prefix: string
  /** `round-robin`, `least-request`, `peak-ewma` or `hash`. */
  readonly balancer: 'round-robin' | 'least-request' | 'peak-ewma' | 'hash'
  /** Whether more than one route has this name (the controls then act on every one of them). */
  readonly shared: boolean
  readonly upstreams: UpstreamStatus[]
}

/** What an operator's control changed on one upstream: `before` and `after` are its status around the change. */
export interface UpstreamChange {
  readonly route: string
  readonly upstream: string
  readonly action: 'drain' | 'enable' | 'force-breaker'
  /** Whether anything changed (`false`: it already was so). */
  readonly changed: boolean
  readonly before: UpstreamStatus
  readonly after: UpstreamStatus
}

const wallClock = (monotonic: number, now: number): string =>
  new Date(Date.now() + (monotonic - now)).toISOString()

/**
 * The status of one upstream of `config`'s route.
 *
 * @example
 * const status = upstreamStatus(config, up, 'local', performance.now())
 */
export function upstreamStatus(
  config: ProxyRouteConfig,
  up: Upstream,
  origin: 'local' | 'peer' | undefined,
  now: number,
): UpstreamStatus {
  const h: UpstreamHost = up.state
  const b = h.breaker
  const ejected = h.ejectedUntil > now
  return {
    upstream: h.id,
    admin: h.draining ? 'drain' : 'ready',
    available: !h.draining && h.available(now) && (b === undefined || b.ready),
    weight: h.weight,
    effectiveWeight: Math.round(h.effectiveWeightAt(now) * 1000) / 1000,
    health: {
      checked: config.healthCheck !== false,
      healthy: h.healthy,
      ejected,
      ejectedUntil: ejected ? wallClock(h.ejectedUntil, now) : null,
      ejections: h.ejections,
    },
    breaker:
      b === undefined
        ? null
        : { state: b.state, forced: b.held ?? null, origin: origin ?? null, window: b.counts },
    inflight: h.inflight,
    queue: {
      active: up.queue.inUse,
      connections: config.connections,
      pending: up.queue.pending,
      maxPending: config.maxPending,
    },
    totals: { requests: h.requests, failures: h.failures },
  }
}

/** The balancer algorithm of a route, as `RouteStatus.balancer` names it. */
export const algorithmOf = (config: ProxyRouteConfig): RouteStatus['balancer'] =>
  typeof config.balancer === 'object' ? 'hash' : config.balancer
