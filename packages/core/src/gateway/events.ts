/**
 * The gateway's events on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts): the changes in an instance's view of its upstreams and the
 * fault injection switched at run time. The audit trail records all four;
 * `route.events` re-emits the first three of its own route as `breaker`,
 * `health` and `ejected`.
 */
import type { AegisEvents } from '../kernel/events.js'
import type { ChaosConfig } from './options.js'

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** An upstream's breaker changed state. `origin: 'peer'`: applied from another instance (`breaker.shared`). */
    'upstream.breaker': {
      readonly route: string
      readonly upstream: string
      readonly state: 'open' | 'half-open' | 'closed'
      readonly origin: 'local' | 'peer'
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
