import type { Engine } from '../kernel/engine.js'
import type { Limiter } from './index.js'

/**
 * The limiter as an engine: decides each request against its policies (a promise
 * while a shared store decides). Its verdict is the pipeline's `Verdict` as it is:
 * header fields, and a rejection when refused.
 *
 * @example
 * const engine = limiterEngine(createLimiter(config.limiter, deps))
 */
export function limiterEngine(limiter: Limiter): Engine & { readonly api: Limiter } {
  return {
    name: 'limiter',
    api: limiter,
    admit: (req, state) => limiter.check(req, state.client, state.startedAt),
    close: () => limiter.close(),
  }
}
