import type { Engine } from '../kernel/engine.js'
import type { BreakerBus } from './shared.js'

/**
 * The breaker engine. Each upstream's breaker is built by its proxy route's balancer
 * (`createBreaker`, asked before every attempt and told its outcome); what the engine
 * owns for the whole instance is the bus that shares breaker states between instances
 * through the Redis store (`breaker.shared`), closed after the routes that publish on it.
 *
 * @example
 * const engine = breakerEngine(createBreakerBus(store, logger))
 */
export function breakerEngine(bus: BreakerBus): Engine & { readonly api: BreakerBus } {
  return { name: 'breaker', api: bus, close: () => bus.close() }
}
