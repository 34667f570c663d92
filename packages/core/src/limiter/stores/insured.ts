/*
 * The insurance: a Redis store wrapped so that a Redis outage never takes the app down
 * (DESIGN.md, invariants). While Redis is down, or when a command fails or times out, a
 * memory store decides instead — per instance, so each instance admits the whole limit —
 * and the policies that must not be decided per instance (`failClosed`) answer 503.
 * Nothing waits for a Redis known to be down: the connection (store/index.ts) says so at
 * once, and a probe brings it back.
 */
import type { RedisConnection } from '../../store/index.js'
import { newVerdict } from '../gcra.js'
import type { Decision, RateLimitStore, StorePolicy } from '../store.js'

export interface InsuredOptions {
  /** A decision the insurance made for `policy` (metrics). */
  readonly onInsurance?: (policy: StorePolicy) => void
}

/**
 * `primary` (on Redis) insured by `insurance` (in memory) while `conn` is down or failing.
 * Before the first connection (at most `store.startupWait`), every call waits for it:
 * deciding in memory then would give each starting instance the whole shared limit.
 *
 * @example
 * const store = createInsuredStore(createRedisGcraStore(conn), createMemoryGcraStore(policies, { maxKeys }), conn, {
 *   onInsurance: (p) => metrics.insurance(p.name),
 * })
 */
export function createInsuredStore(
  primary: RateLimitStore,
  insurance: RateLimitStore,
  conn: Pick<RedisConnection, 'up' | 'starting' | 'started' | 'fail'>,
  options: InsuredOptions = {},
): RateLimitStore {
  const { onInsurance } = options
  /** Redis while it answers, else (or when it fails now) the insurance: penalty, reward, get. */
  async function either<T>(use: (store: RateLimitStore) => T | Promise<T>): Promise<T> {
    if (conn.starting) await conn.started
    if (conn.up) {
      try {
        return await use(primary)
      } catch (err) {
        conn.fail(err)
      }
    }
    return use(insurance)
  }

  return {
    async consume(policies, keys, costs, now, out = policies.map(newVerdict)): Promise<Decision> {
      const n = policies.length
      // The caller's scratch may change while Redis answers; the insurance may need these after.
      const ks = keys.slice(0, n)
      const cs = costs.slice(0, n)
      if (conn.starting) await conn.started
      if (conn.up) {
        try {
          return await primary.consume(policies, ks, cs, now, out)
        } catch (err) {
          conn.fail(err)
        }
      }
      for (let i = 0; i < n; i++) if ((policies[i] as StorePolicy).failClosed) return undefined
      if (onInsurance !== undefined) for (let i = 0; i < n; i++) onInsurance(policies[i] as StorePolicy)
      return insurance.consume(policies, ks, cs, performance.now(), out)
    },
    adjust: (policy, key, points) => either((s) => s.adjust(policy, key, points)),
    get: (policy, key, out) => either((s) => s.get(policy, key, out)),
    async reset(policy, key) {
      if (conn.starting) await conn.started
      // Both forget it; Redis' error (down) reaches the caller, as the key may still be there.
      await insurance.reset(policy, key)
      await primary.reset(policy, key)
    },
  }
}
