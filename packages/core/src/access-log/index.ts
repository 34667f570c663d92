/**
 * The access log: one line per finished request, through the configured logger
 * (`accessLog: true`). Path only (queries carry tokens), the client masked, no
 * headers or bodies.
 */
import type { Engine } from '../kernel/engine.js'
import type { Logger } from '../kernel/logger.js'
import { pathOf } from '../kernel/url.js'
import { maskAddress } from '../client/index.js'

/**
 * @example
 * const engine = accessLogEngine(logger)
 */
export function accessLogEngine(logger: Logger): Engine {
  return {
    name: 'access-log',
    observe(req, state, seen) {
      logger.info(
        {
          method: req.method,
          path: pathOf(req.url ?? ''),
          route: state.route,
          status: seen.status,
          durationMs: Math.round(seen.ms * 1e3) / 1e3,
          client: maskAddress(state.client.ip),
          ...(state.rejection === undefined ? {} : { rejected: state.rejection.reason }),
        },
        'request completed',
      )
    },
  }
}
