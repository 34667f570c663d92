import type { IncomingMessage } from 'node:http'
import type { Engine } from '../kernel/engine.js'
import type { AdmittedState } from '../kernel/types.js'
import type { Limiter, LimitResult } from './index.js'

/**
 * The limiter as an engine: decides each request against its policies (a promise
 * while a shared store decides) and gives back its concurrency slot when observed.
 *
 * @example
 * const engine = limiterEngine(createLimiter(config.limiter, deps))
 */
export function limiterEngine(limiter: Limiter): Engine & { readonly api: Limiter } {
  /** The verdict as the pipeline takes it; the slot is the request's whatever the pipeline does with it. */
  const held = (state: AdmittedState, result: LimitResult): LimitResult => {
    state.slot = result.acquired === true
    return result
  }
  return {
    name: 'limiter',
    api: limiter,
    admit(req: IncomingMessage, state) {
      const s = state as AdmittedState
      const result = limiter.check(req, state.client, state.startedAt)
      if (result === undefined) return undefined
      if ('then' in result) return result.then((r) => held(s, r))
      return held(s, result)
    },
    observe(_req, state, seen) {
      const s = state as AdmittedState
      if (!s.slot) return
      s.slot = false
      // Server errors and abandoned requests are the overload signals of the adaptive limit.
      limiter.release(seen.ms, seen.status < 500 && seen.status !== 499)
    },
    close: () => limiter.close(),
  }
}
