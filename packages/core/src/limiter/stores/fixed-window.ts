/*
 * The `fixed-window` algorithm, on rate-limiter-flexible where it is strong: its
 * counters on memory and Redis (one INCR script per request) and its block
 * handling (`blockDuration` keeps a key refused, with an in-memory copy of the
 * ban so a banned client costs no round trip). Windows are fixed: a client can
 * spend the limit at the end of one and again at the start of the next — the
 * default `gcra` algorithm does not allow that. While Redis is down, the insured
 * store (insured.ts) decides with the memory variant of this store.
 */
import type { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { rateLimiterFlexible } from '../../dependencies.js'
import type { RedisConnection } from '../../store/index.js'
import { newVerdict, type Verdict } from '../gcra.js'
import { splitBy, type Decision, type RateLimitStore, type StorePolicy } from '../store.js'

type Counter = RateLimiterMemory | RateLimiterRedis

/**
 * The fixed-window store of `policies` (each at its `index`): in memory, or on the Redis of
 * `conn` (one Redis or a Cluster) when given. On Redis, errors reject.
 *
 * @example
 * const store = createFixedWindowStore(policies, conn) // conn: undefined for memory
 * const verdicts = await store.consume([policy], ['203.0.113.7'], [1], performance.now())
 */
export function createFixedWindowStore(
  policies: readonly StorePolicy[],
  conn?: Pick<RedisConnection, 'client' | 'prefix'>,
): RateLimitStore {
  const { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } = rateLimiterFlexible()
  const counters: Counter[] = []
  for (const p of policies) {
    const blockDuration = p.rate.blockMs / 1000
    const base = { points: p.points, duration: p.duration, blockDuration, keyPrefix: `fw:${p.name}` }
    counters[p.index] =
      conn === undefined
        ? new RateLimiterMemory(base)
        : new RateLimiterRedis({
            ...base,
            keyPrefix: `${conn.prefix}${base.keyPrefix}`,
            storeClient: conn.client,
            // Not ready: reject at once, and the insurance decides (no queue, no wait).
            rejectIfRedisNotReady: true,
            // A banned key is refused from memory, without asking Redis.
            inMemoryBlockOnConsumed: blockDuration > 0 ? p.points + 1 : 0,
          })
  }
  const counterOf = (p: StorePolicy): Counter => counters[p.index] as Counter

  const fill = (p: StorePolicy, res: RateLimiterRes, allowed: boolean, out: Verdict): Verdict => {
    out.allowed = allowed
    out.remaining = Math.max(0, res.remainingPoints)
    out.resetMs = Math.max(0, res.msBeforeNext)
    out.retryMs = allowed ? 0 : out.resetMs
    out.banned = !allowed && p.rate.blockMs > 0
    return out
  }

  async function consumeOne(p: StorePolicy, key: string, cost: number, out: Verdict): Promise<Verdict> {
    const counter = counterOf(p)
    try {
      return fill(p, await counter.consume(key, cost), true, out)
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err
      // A refused request is charged nothing (the GCRA promise, docs/configuration.md), but
      // rate-limiter-flexible has counted it: give it back, or a request costing more than
      // what is left would spend the rest. Not with `blockDuration`: there the count past
      // the limit is the ban, and the refusal may come from the in-memory copy of the ban.
      fill(p, err, false, out)
      if (cost > 0 && p.rate.blockMs === 0) {
        await counter.reward(key, cost).catch(() => undefined)
        out.remaining = Math.max(0, p.points - (err.consumedPoints - cost))
      }
      return out
    }
  }

  const store: RateLimitStore = {
    async consume(policies, keys, costs, now, out = policies.map(newVerdict)): Promise<Decision> {
      // Each policy is its own counter: several are decided apart and kept all or nothing by refunds.
      if (policies.length > 1) return splitBy(store, (i) => i, policies, keys, costs, now, out)
      await consumeOne(policies[0] as StorePolicy, keys[0] as string, costs[0] as number, out[0] as Verdict)
      return out
    },
    async adjust(policy, key, points) {
      if (points > 0) await counterOf(policy).penalty(key, points)
      else if (points < 0) await counterOf(policy).reward(key, -points)
    },
    async get(policy, key, out) {
      const res = await counterOf(policy).get(key)
      if (res === null) return undefined
      return fill(policy, res, res.remainingPoints > 0, out)
    },
    async reset(policy, key) {
      await counterOf(policy).delete(key)
    },
  }
  return store
}
