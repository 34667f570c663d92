/*
 * A limiter whose policies live in different stores (a fixed-window route on a GCRA
 * default) still talks to one store: this one sends each policy to its own and keeps
 * a request all or nothing across them.
 */
import { decideApart, partsBy, type RateLimitStore, type StorePolicy } from '../store.js'

/**
 * One store over `policies`, each kept by `storeOf(policy)`. When they all share one,
 * that store itself is returned: nothing stands between it and the limiter.
 *
 * @example
 * const store = createRoutedStore(policies, (p) => (p.algorithm === 'fixed-window' ? fixed : gcra))
 */
export function createRoutedStore<P extends StorePolicy>(
  policies: readonly P[],
  storeOf: (policy: P) => RateLimitStore,
): RateLimitStore {
  const stores: RateLimitStore[] = []
  for (const p of policies) stores[p.index] = storeOf(p)
  const only = stores[0]
  if (only !== undefined && stores.every((s) => s === only)) return only
  const of = (p: StorePolicy): RateLimitStore => stores[p.index] as RateLimitStore

  return {
    consume(policies, keys, costs, now, out) {
      const n = policies.length
      const first = of(policies[0] as StorePolicy)
      for (let i = 1; i < n; i++) {
        if (of(policies[i] as StorePolicy) !== first) {
          const parts = partsBy(
            n,
            (j) => of(policies[j] as StorePolicy),
            (s) => s,
          )
          return decideApart(parts, policies, keys, costs, now, out)
        }
      }
      // Every policy of this request in one store (routes often add none): it decides alone, synchronously if it can.
      return first.consume(policies, keys, costs, now, out)
    },
    adjust: (policy, key, points) => of(policy).adjust(policy, key, points),
    get: (policy, key, out) => of(policy).get(policy, key, out),
    reset: (policy, key) => of(policy).reset(policy, key),
  }
}
