import type { Engine } from '../kernel/engine.js'
import type { Cors } from './index.js'

/**
 * CORS as an engine: a preflight is answered before the app; any other request
 * gets the fields its origin earns (the verdict itself is the list: nothing allocated).
 *
 * @example
 * const engine = corsEngine(createCors(config.cors))
 */
export function corsEngine(cors: Cors): Engine {
  return {
    name: 'cors',
    admit(req) {
      const verdict = cors.evaluate(req)
      if (verdict.kind === 'preflight') return verdict.response
      return verdict.headers.length === 0 ? undefined : verdict
    },
  }
}
