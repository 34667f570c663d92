/*
 * The one place that knows the backends: from the policies and the Redis connection,
 * build the store the limiter talks to. GCRA in memory or on Redis (one or a Cluster),
 * fixed windows in memory or on Redis, the Redis ones insured by their memory twin,
 * and one routed store over them when the policies mix algorithms.
 */
import type { RedisConnection } from '../../store/index.js'
import type { RateLimitStore, StorePolicy } from '../store.js'
import { createFixedWindowStore } from './fixed-window.js'
import { createInsuredStore } from './insured.js'
import { createMemoryGcraStore } from './memory-gcra.js'
import { createRedisGcraStore } from './redis-gcra.js'
import { createRoutedStore } from './routed.js'

export type { Decision, RateLimitStore, StorePolicy } from '../store.js'

/** A policy as the limiter compiles it: which algorithm counts it. */
export interface AlgorithmPolicy extends StorePolicy {
  readonly algorithm: 'gcra' | 'fixed-window'
}

export interface LimiterStoreOptions {
  /** Most keys a memory store holds per policy. */
  readonly maxKeys: number
  /** A decision the memory insurance made while Redis was down (metrics). */
  readonly onInsurance?: (policy: StorePolicy) => void
}

/** What the limiter does while Redis is down, as the store's outage log line says it. */
function fallbackOf(policies: readonly StorePolicy[]): string {
  const closed = policies.filter((p) => p.failClosed).map((p) => JSON.stringify(p.name))
  if (closed.length === 0) return 'deciding in memory (insurance)'
  if (closed.length === policies.length) return 'answering 503 (limiter failClosed)'
  return `answering 503 for the failClosed policies (${closed.join(', ')}), deciding the others in memory (insurance)`
}

/**
 * The store of a limiter's `policies` (each at its `index`): memory without `conn`,
 * Redis insured by memory with it.
 *
 * @example
 * const store = createLimiterStore(policies, connectStore(config.store, logger), { maxKeys: 100_000 })
 */
export function createLimiterStore(
  policies: readonly AlgorithmPolicy[],
  conn: RedisConnection | undefined,
  options: LimiterStoreOptions,
): RateLimitStore {
  conn?.describeFallback(fallbackOf(policies))
  const gcra = policies.filter((p) => p.algorithm === 'gcra')
  const fixed = policies.filter((p) => p.algorithm === 'fixed-window')
  const insured = (primary: () => RateLimitStore, memory: RateLimitStore): RateLimitStore =>
    conn === undefined ? memory : createInsuredStore(primary(), memory, conn, options)
  // rate-limiter-flexible is loaded only when a policy counts fixed windows.
  const gcraStore =
    gcra.length === 0
      ? undefined
      : insured(
          () => createRedisGcraStore(conn as RedisConnection, gcra.length),
          createMemoryGcraStore(gcra, options),
        )
  const fixedStore =
    fixed.length === 0
      ? undefined
      : insured(() => createFixedWindowStore(fixed, conn), createFixedWindowStore(fixed))
  return createRoutedStore(
    policies,
    (p) => (p.algorithm === 'gcra' ? gcraStore : fixedStore) as RateLimitStore,
  )
}
