/**
 * The anomaly engine's events on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts). Keys and addresses in them are masked as in every log line: an
 * address to its /24 or /48, an identity's value to its first characters.
 */
import type { EventBus, Unsubscribe } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** A client's score crossed the threshold (once, until it falls back under). */
    'anomaly.flagged': {
      readonly key: string
      readonly client: string
      readonly score: number
      /** `rule:<name>`, or `model:<feature>:<high|low>` for the features that isolated it most. */
      readonly reasons: readonly string[]
    }
    /** A client was blocked: by a verdict, an operator (`reasons: ['operator']`) or another instance (`shared`). */
    'anomaly.blocked': {
      readonly key: string
      readonly client?: string
      readonly score: number
      readonly reasons: readonly string[]
      /** Blocks of this client within a day, this one included: the cool-down doubles with each. */
      readonly strikes: number
      readonly coolDownMs: number
      /** When it ends (the engine's clock, ms since the epoch). */
      readonly until: number
      readonly shared?: boolean
    }
    /** A campaign on a route, or from a network, began (`active: true`) or ended. */
    'anomaly.campaign': {
      readonly id: string
      /** `credential-stuffing`, `distributed-flood` or (a network's) `address-rotation`. */
      readonly kind: string
      readonly scope: 'route' | 'network'
      /** The route template; `*` for a network's campaign. */
      readonly route: string
      /** The /24 or /48 of a network's campaign. */
      readonly network?: string
      readonly active: boolean
      readonly failures: number
      readonly clients: number
      /** Clients never seen before among those that made its requests. */
      readonly newClients: number
      /** The /24 or /48 prefixes taking the most part, with their failures. */
      readonly prefixes: ReadonlyArray<readonly [string, number]>
    }
  }
}

/**
 * The anomaly engine's events in the logs: a block or a campaign at `warn` (someone is
 * attacking), a flag and a campaign's end at `info`.
 *
 * @example
 * const off = logAnomalyEvents(bus, logger)
 */
export function logAnomalyEvents(bus: EventBus, logger: Logger): Unsubscribe {
  const offs = [
    bus.on('anomaly.flagged', (e) => logger.info(e, 'anomalous client')),
    bus.on('anomaly.blocked', (e) => logger.warn(e, 'client blocked as anomalous')),
    bus.on('anomaly.campaign', (e) =>
      e.active ? logger.warn(e, 'campaign detected') : logger.info(e, 'campaign over'),
    ),
  ]
  return () => offs.forEach((off) => off())
}
