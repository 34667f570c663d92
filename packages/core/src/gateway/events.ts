/**
 * The gateway's events on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts): the changes in an instance's view of its upstreams and the
 * fault injection switched at run time. The audit trail records all four;
 * `route.events` re-emits the first three of its own route as `breaker`,
 * `health` and `ejected`.
 */
import type { AegisEvents, EventBus, Unsubscribe } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import type { Metrics } from '../metrics/index.js'
import type { ChaosConfig } from './options.js'

/** The part of an upstream's state its controls change, as `upstream.admin` events carry it. */
export interface UpstreamAdminState {
  readonly admin: 'ready' | 'drain'
  /** `null`: the route has no breakers. */
  readonly breaker: 'open' | 'half-open' | 'closed' | null
  readonly forced: 'open' | 'closed' | null
}

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** An upstream's breaker changed state. `origin: 'peer'`: applied from another instance (`breaker.shared`). */
    'upstream.breaker': {
      readonly route: string
      readonly upstream: string
      readonly state: 'open' | 'half-open' | 'closed'
      readonly origin: 'local' | 'peer'
      /** Set when an operator's hold made the change (`gateway.forceBreaker()`), not the breaker itself. */
      readonly forced?: true
    }
    /**
     * An operator's control on an upstream (`aegis.gateway.drain()`, `enable()`,
     * `forceBreaker()`): what it was asked and what changed. Emitted even when nothing
     * changed (`changed: false`), so that an audit trail records every request.
     */
    'upstream.admin': {
      readonly route: string
      readonly upstream: string
      readonly action: 'drain' | 'enable' | 'force-breaker'
      /** For `force-breaker`: the hold asked for. */
      readonly breaker?: 'open' | 'closed' | 'auto'
      readonly changed: boolean
      /** The upstream's `admin` state and breaker state before and after. */
      readonly before: UpstreamAdminState
      readonly after: UpstreamAdminState
    }
    /** Active health checks took an upstream out of rotation, or brought it back. */
    'upstream.health': {
      readonly route: string
      readonly upstream: string
      readonly healthy: boolean
    }
    /** Passive outlier detection ejected an upstream for `ms` milliseconds. */
    'upstream.ejected': {
      readonly route: string
      readonly upstream: string
      readonly ms: number
    }
    /** A route's fault injection was switched at run time (`route.setChaos()`). */
    'proxy.chaos': {
      readonly route: string
      /** The fault injection now in force (`false`: off). */
      readonly chaos: ChaosConfig
    }
  }
}

/** The upstream events `route.events` re-emits for its own route, by their name there. */
export const ROUTE_EVENTS = {
  'upstream.breaker': 'breaker',
  'upstream.health': 'health',
  'upstream.ejected': 'ejected',
} as const satisfies Partial<Record<keyof AegisEvents, string>>

/**
 * The gateway's events in the logs: each one line, at `warn` for what takes capacity
 * away (a breaker opening, an upstream failing its checks or ejected), at `info` otherwise.
 *
 * @example
 * const off = logGatewayEvents(bus, logger)
 */
export function logGatewayEvents(bus: EventBus, logger: Logger): Unsubscribe {
  const offs = [
    bus.on('upstream.breaker', (e) =>
      logger[e.state === 'open' ? 'warn' : 'info'](e, `upstream breaker ${e.state}`),
    ),
    bus.on('upstream.health', (e) =>
      logger[e.healthy ? 'info' : 'warn'](e, `upstream ${e.healthy ? 'healthy' : 'unhealthy'}`),
    ),
    bus.on('upstream.ejected', (e) => logger.warn(e, 'upstream ejected')),
    bus.on('proxy.chaos', (e) => logger.info(e, 'fault injection changed')),
    bus.on('upstream.admin', (e) =>
      logger.info(
        { route: e.route, upstream: e.upstream, action: e.action, breaker: e.breaker, changed: e.changed },
        `upstream ${e.action}`,
      ),
    ),
  ]
  return () => offs.forEach((off) => off())
}

/**
 * The gateway's events in the metrics: each upstream's breaker state (0 closed, 1
 * half-open, 2 open), health (1 healthy) and ejections, by route and upstream.
 *
 * @example
 * const off = countGatewayEvents(bus, metrics)
 */
export function countGatewayEvents(bus: EventBus, metrics: Metrics): Unsubscribe {
  const offs = [
    bus.on('upstream.breaker', (e) => {
      metrics.upstream(e.route, e.upstream).breaker.value =
        e.state === 'closed' ? 0 : e.state === 'half-open' ? 1 : 2
    }),
    bus.on('upstream.health', (e) => {
      metrics.upstream(e.route, e.upstream).healthy.value = e.healthy ? 1 : 0
    }),
    bus.on('upstream.ejected', (e) => {
      metrics.upstream(e.route, e.upstream).ejections.value++
    }),
  ]
  return () => offs.forEach((off) => off())
}
