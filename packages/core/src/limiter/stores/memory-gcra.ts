/*
 * GCRA in process memory: one bounded `MemoryBuckets` per policy (gcra.ts), decided
 * synchronously. It is the store of a limiter without Redis, and the insurance of
 * the Redis ones (insured.ts).
 */
import { MemoryBuckets, newVerdict, type Verdict } from '../gcra.js'
import type { Decision, RateLimitStore, StorePolicy } from '../store.js'

export interface MemoryGcraOptions {
  /** Most keys held per policy (least recently used go first). */
  readonly maxKeys: number
}

/**
 * The memory GCRA store of `policies` (each at its `index`).
 *
 * @example
 * const store = createMemoryGcraStore(policies, { maxKeys: 100_000 })
 * const [verdict] = store.consume([policy], ['203.0.113.7'], [1], performance.now()) as Verdict[]
 */
export function createMemoryGcraStore(
  policies: readonly StorePolicy[],
  options: MemoryGcraOptions,
): RateLimitStore {
  const buckets: MemoryBuckets[] = []
  for (const p of policies) buckets[p.index] = new MemoryBuckets(p.rate, options.maxKeys)
  const bucketsOf = (p: StorePolicy): MemoryBuckets => buckets[p.index] as MemoryBuckets
  // The verdicts of a call without `out`: the caller reads them before the next request.
  const scratch: Verdict[] = policies.map(newVerdict)

  return {
    consume(policies, keys, costs, now, out = scratch): Decision {
      const n = policies.length
      let refused = false
      for (let i = 0; i < n; i++) {
        const p = policies[i] as StorePolicy
        const v = bucketsOf(p).check(keys[i] as string, costs[i] as number, now, out[i] as Verdict)
        if (!v.allowed && p.enforce) refused = true
      }
      for (let i = 0; i < n; i++) {
        const p = policies[i] as StorePolicy
        const b = bucketsOf(p)
        const v = out[i] as Verdict
        if (v.allowed) {
          // Each policy has its own buckets, so each remembers the bucket it just checked.
          if (!refused) b.commit()
          else {
            // Admitted by this policy, refused by another: not charged, so report what it holds.
            const cost = costs[i] as number
            v.remaining = Math.floor(v.remaining + cost)
            v.resetMs = Math.max(0, v.resetMs - cost * p.rate.interval)
          }
        } else if (p.rate.blockMs > 0 && !v.banned) b.ban(keys[i] as string, now, v)
      }
      return out
    },
    adjust(policy, key, points) {
      bucketsOf(policy).adjust(key, points, performance.now())
    },
    get(policy, key, out) {
      return bucketsOf(policy).get(key, performance.now(), out)
    },
    reset(policy, key) {
      bucketsOf(policy).delete(key)
    },
  }
}
