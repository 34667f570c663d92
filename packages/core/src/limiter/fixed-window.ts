/*
 * The `fixed-window` algorithm, on rate-limiter-flexible where it is strong: its
 * counters on memory and Redis (one INCR script per request), its insurance
 * wiring (a memory limiter answers when a Redis command fails) and its block
 * handling (`blockDuration` keeps a key refused, with an in-memory copy of the
 * ban so a banned client costs no round trip). Windows are fixed: a client can
 * spend the limit at the end of one and again at the start of the next — the
 * default `gcra` algorithm does not allow that.
 */
import type { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { rateLimiterFlexible } from '../dependencies.js'
import type { RedisConnection } from '../store/index.js'
import type { Verdict } from './gcra.js'

export interface FixedWindowPolicy {
  readonly name: string
  readonly points: number
  readonly duration: number
  readonly blockDuration: number
}

/** A fixed-window policy: consume / adjust / get / delete on its store, insured by memory when on Redis. */
export class FixedWindow {
  private readonly limiter: RateLimiterMemory | RateLimiterRedis
  private readonly insurance: RateLimiterMemory | undefined

  constructor(
    private readonly policy: FixedWindowPolicy,
    private readonly conn: RedisConnection | undefined,
    onInsurance: () => void,
  ) {
    const base = {
      points: policy.points,
      duration: policy.duration,
      blockDuration: policy.blockDuration,
      keyPrefix: `fw:${policy.name}`,
    }
    const { RateLimiterMemory, RateLimiterRedis } = rateLimiterFlexible()
    if (conn === undefined) {
      this.limiter = new RateLimiterMemory(base)
      return
    }
    // rate-limiter-flexible calls the insurance limiter itself when a command fails.
    const insurance = new (class extends RateLimiterMemory {
      override consume(...args: Parameters<RateLimiterMemory['consume']>) {
        onInsurance()
        return super.consume(...args)
      }
    })(base)
    this.insurance = insurance
    this.limiter = new RateLimiterRedis({
      ...base,
      keyPrefix: `${conn.prefix}${base.keyPrefix}`,
      storeClient: conn.client,
      rejectIfRedisNotReady: true,
      insuranceLimiter: insurance,
      // A banned key is refused from memory, without asking Redis.
      inMemoryBlockOnConsumed: policy.blockDuration > 0 ? policy.points + 1 : 0,
    })
  }

  // While Redis is known to be down, go straight to the insurance: nobody waits for a timeout.
  private get active(): RateLimiterMemory | RateLimiterRedis {
    return this.conn !== undefined && !this.conn.up && this.insurance !== undefined
      ? this.insurance
      : this.limiter
  }

  private fill(res: RateLimiterRes, allowed: boolean, out: Verdict): Verdict {
    out.allowed = allowed
    out.remaining = Math.max(0, res.remainingPoints)
    out.resetMs = Math.max(0, res.msBeforeNext)
    out.retryMs = allowed ? 0 : out.resetMs
    out.banned = !allowed && this.policy.blockDuration > 0
    return out
  }

  async consume(key: string, cost: number, out: Verdict): Promise<Verdict> {
    try {
      return this.fill(await this.active.consume(key, cost), true, out)
    } catch (err) {
      if (!(err instanceof rateLimiterFlexible().RateLimiterRes)) throw err
      // A refused request is charged nothing (the GCRA promise, docs/configuration.md), but
      // rate-limiter-flexible has counted it: give it back, or a request costing more than
      // what is left would spend the rest. Not with `blockDuration`: there the count past
      // the limit is the ban, and the refusal may come from the in-memory copy of the ban.
      this.fill(err, false, out)
      if (cost > 0 && this.policy.blockDuration === 0) {
        await this.active.reward(key, cost).catch(() => undefined)
        out.remaining = Math.max(0, this.policy.points - (err.consumedPoints - cost))
      }
      return out
    }
  }

  /** Penalty (`points` > 0) or reward (< 0). */
  async adjust(key: string, points: number): Promise<void> {
    if (points > 0) await this.active.penalty(key, points)
    else if (points < 0) await this.active.reward(key, -points)
  }

  async get(key: string, out: Verdict): Promise<Verdict | undefined> {
    const res = await this.active.get(key)
    if (res === null) return undefined
    return this.fill(res, res.remainingPoints > 0, out)
  }

  async delete(key: string): Promise<void> {
    await Promise.all([this.limiter.delete(key), this.insurance?.delete(key)])
  }
}
