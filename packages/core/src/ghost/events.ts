/**
 * The ghost cache's events on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts), and what the logs and the metrics make of them: a route that
 * starts answering from the ghost is an outage someone must hear of, even when no
 * client does.
 */
import type { EventBus, Unsubscribe } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'

declare module '../kernel/events.js' {
  interface AegisEvents {
    /**
     * A route started answering failures from the ghost cache (`serving: true`, with the
     * failure that started it), or its upstream (or the app) answered again (`false`).
     * `route` is a proxy route's name, or `'app'` for the app's own routes.
     */
    'ghost.serving': {
      readonly route: string
      readonly serving: boolean
      /** What the first stand-in answered for: `status` (an upstream or app 5xx), `error`, `timeout`, `unavailable`. */
      readonly reason?: string
    }
    /** A failure was answered from the ghost cache (`reason`: what failed, or `synthesized`). */
    'ghost.served': {
      readonly route: string
      readonly reason: string
    }
    /** Entries were forgotten on request (`aegis.ghost.purge()`). */
    'ghost.purged': {
      readonly by: 'key' | 'prefix' | 'template' | 'route' | 'all'
      /** The key, prefix, template or route purged (`''` for `all`). */
      readonly value: string
      /** Base keys forgotten. */
      readonly count: number
    }
  }
}

/**
 * The ghost's events in the logs: a route switching to the ghost at `warn` (its
 * upstream is failing), back at `info`; purges at `info`.
 *
 * @example
 * const off = logGhostEvents(bus, logger)
 */
export function logGhostEvents(bus: EventBus, logger: Logger): Unsubscribe {
  const offs = [
    bus.on('ghost.serving', (e) =>
      e.serving
        ? logger.warn(e, 'answering failures from the ghost cache')
        : logger.info(e, 'no longer answering from the ghost cache'),
    ),
    bus.on('ghost.purged', (e) => logger.info(e, 'ghost cache purged')),
  ]
  return () => offs.forEach((off) => off())
}
