import type { IncomingMessage } from 'node:http'
import type { Engine } from '../kernel/engine.js'
import type { BodyLimits } from './body-limits.js'
import type { RequestShape, Validator } from './index.js'

/**
 * The validator as an engine: request hardening at admission, and the body of a
 * request it lets through counted as it streams when its length is not known.
 *
 * @example
 * const engine = validatorEngine(createValidator(config.validator), limits)
 */
export function validatorEngine(validator: Validator, limits: BodyLimits): Engine {
  // Admission is synchronous: one shape object serves every request (no allocation on the hot path).
  const shape: RequestShape = { watch: false, ceiling: limits.ceiling }
  return {
    name: 'validator',
    connect: validator.allows('CONNECT') ? null : validator.methodRejection,
    admit(req: IncomingMessage) {
      shape.watch = false
      shape.ceiling = limits.ceiling
      const rejection = validator.inspect(req, shape)
      if (rejection !== undefined) return rejection
      // Count chunks from the first one: with a shared store the parser keeps pushing the body while Redis answers.
      if (shape.watch) limits.watch(req)
      return undefined
    },
  }
}
