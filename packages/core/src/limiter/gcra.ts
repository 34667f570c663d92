/*
 * GCRA (the generic cell rate algorithm: a token bucket kept as one number, the
 * "theoretical arrival time" of the next request) — written here rather than taken
 * from rate-limiter-flexible, whose limiters count fixed windows (a client can spend
 * twice the limit across a window boundary), keep an unbounded Map in memory and
 * arm one timer per key. A bucket here is two numbers in a bounded LRU; an entry
 * whose time has passed is the same as no entry, so expiry is lazy and free.
 *
 * With interval T = duration / points and tolerance τ = burst × T, a request of
 * cost c at time now conforms when max(tat, now) + c×T − now ≤ τ. In any span of
 * t ms at most burst + t / T points are admitted: never twice the limit at a
 * window edge. The Redis store runs the same arithmetic in Lua (stores/redis-gcra.ts).
 */
import { LRUCache } from 'lru-cache'

/** The arithmetic of one policy. */
export interface Rate {
  /** Milliseconds per point. */
  readonly interval: number
  /** Bucket size in milliseconds (burst × interval). */
  readonly tolerance: number
  /** Ban length after a refusal, in ms (0: none). */
  readonly blockMs: number
}

/** The outcome of one policy for one request. Reused: copy what you keep. */
export interface Verdict {
  allowed: boolean
  /** Points left after this request. */
  remaining: number
  /** Milliseconds until the bucket is full again. */
  resetMs: number
  /** When refused: milliseconds until this request would be admitted. */
  retryMs: number
  /** Refused because of a ban (`blockDuration`). */
  banned: boolean
}

export const newVerdict = (): Verdict => ({
  allowed: true,
  remaining: 0,
  resetMs: 0,
  retryMs: 0,
  banned: false,
})

// Floating-point slack: 1 µs, far below any interval a policy can have.
const EPSILON = 1e-3

interface Bucket {
  tat: number
  bannedUntil: number
}

/**
 * The memory store of one policy: buckets by key, at most `maxKeys` of them.
 * Time is `performance.now()` (monotonic: a wall-clock step changes nothing).
 */
export class MemoryBuckets {
  private readonly buckets: LRUCache<string, Bucket>
  // The bucket `check` looked at, for `commit` to update without a second lookup.
  private pending: Bucket | undefined
  private pendingKey = ''
  private pendingTat = 0

  constructor(
    readonly rate: Rate,
    maxKeys: number,
  ) {
    this.buckets = new LRUCache({ max: maxKeys })
  }

  get size(): number {
    return this.buckets.size
  }

  /** Decide `cost` points for `key` without spending them; `commit` spends. */
  check(key: string, cost: number, now: number, out: Verdict): Verdict {
    const { interval, tolerance } = this.rate
    const bucket = this.buckets.get(key)
    this.pending = bucket
    this.pendingKey = key
    if (bucket !== undefined && bucket.bannedUntil > now) {
      out.allowed = false
      out.banned = true
      out.remaining = 0
      out.retryMs = bucket.bannedUntil - now
      out.resetMs = out.retryMs // the bucket is full when the ban ends
      return out
    }
    const tat = bucket === undefined || bucket.tat < now ? now : bucket.tat
    const newTat = tat + cost * interval
    const used = newTat - now
    out.banned = false
    if (used <= tolerance + EPSILON) {
      out.allowed = true
      out.remaining = Math.floor((tolerance - used) / interval + EPSILON)
      out.resetMs = used
      out.retryMs = 0
      this.pendingTat = newTat
    } else {
      out.allowed = false
      out.remaining = Math.max(0, Math.floor((tolerance - (tat - now)) / interval + EPSILON))
      out.resetMs = tat - now
      out.retryMs = used - tolerance
      this.pendingTat = tat
    }
    return out
  }

  /** Spend what the last `check` admitted. */
  commit(): void {
    const bucket = this.pending
    if (bucket === undefined) this.buckets.set(this.pendingKey, { tat: this.pendingTat, bannedUntil: 0 })
    else bucket.tat = this.pendingTat
    this.pending = undefined
  }

  /** Ban `key` for the policy's block duration (after a refusal); the bucket is full when it ends. */
  ban(key: string, now: number, out?: Verdict): void {
    const until = now + this.rate.blockMs
    this.buckets.set(key, { tat: 0, bannedUntil: until })
    if (out !== undefined) {
      out.banned = true
      out.retryMs = this.rate.blockMs
      out.resetMs = this.rate.blockMs
      out.remaining = 0
    }
  }

  /** Add (`points` > 0, a penalty) or give back (< 0, a reward) points, whatever the bucket holds. */
  adjust(key: string, points: number, now: number): void {
    const bucket = this.buckets.get(key)
    const tat = bucket === undefined || bucket.tat < now ? now : bucket.tat
    const newTat = Math.max(now, tat + points * this.rate.interval)
    if (bucket === undefined) this.buckets.set(key, { tat: newTat, bannedUntil: 0 })
    else bucket.tat = newTat
  }

  /** The state of `key` without spending anything; `undefined` when it is untouched. */
  get(key: string, now: number, out: Verdict): Verdict | undefined {
    const bucket = this.buckets.peek(key)
    if (bucket === undefined || (bucket.tat <= now && bucket.bannedUntil <= now)) return undefined
    this.check(key, 0, now, out)
    this.pending = undefined
    if (out.banned) return out
    out.allowed = out.remaining > 0
    out.retryMs = out.allowed ? 0 : Math.max(0, out.resetMs - this.rate.tolerance + this.rate.interval)
    return out
  }

  delete(key: string): boolean {
    return this.buckets.delete(key)
  }

  clear(): void {
    this.buckets.clear()
  }
}
