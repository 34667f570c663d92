/*
 * The limiter's heavy hitters, for the admin API (`limiter.top()`): which keys were refused
 * most in the last window, and which use the largest share of their limit. Bounded memory
 * and a tiny request-path cost: refusals feed a Space-Saving summary (Metwally, Agrawal,
 * El Abbadi, "Efficient Computation of Frequent and Top-k Elements in Data Streams", 2005:
 * m counters, a newcomer takes the smallest one's place and inherits its count as its
 * possible error, so a reported count is never below the true one and at most `error`
 * above it), and admitted requests are sampled, one in `SAMPLE_EVERY`, into a bounded set of
 * candidates for the largest share. The store is asked for the candidates' current state only
 * when `top()` is called, so the shares shown are exact for the keys shown. Per instance: with
 * Redis every instance counts its own refusals and samples its own requests.
 */

/** Counters per policy and per window of the refusal summary, and candidates for the largest share. */
export const TOP_CAPACITY = 100
/** One admitted request in this many is looked at for the share summary. */
export const SAMPLE_EVERY = 16

/**
 * A Space-Saving summary of `capacity` counters over a stream of keys, with its counters in a
 * min-heap by count: a newcomer replaces the root in O(log m), a known key grows in O(log m).
 */
export class SpaceSaving {
  private readonly keys: string[] = []
  private readonly counts: number[] = []
  private readonly errors: number[] = []
  /** Each key's position in the heap arrays. */
  private readonly at = new Map<string, number>()

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.keys.length
  }

  /** Count one occurrence of `key`. */
  add(key: string): void {
    let i = this.at.get(key)
    if (i !== undefined) {
      this.counts[i] = (this.counts[i] as number) + 1
      this.down(i)
      return
    }
    if (this.keys.length < this.capacity) {
      i = this.keys.length
      this.keys.push(key)
      this.counts.push(1)
      this.errors.push(0)
      this.at.set(key, i)
      this.up(i)
      return
    }
    // Full: the key with the smallest count gives its place, and its count is the newcomer's error.
    const min = this.counts[0] as number
    this.at.delete(this.keys[0] as string)
    this.keys[0] = key
    this.counts[0] = min + 1
    this.errors[0] = min
    this.at.set(key, 0)
    this.down(0)
  }

  /** `key`'s count and possible overcount, or `undefined` when it holds no counter. */
  get(key: string): { count: number; error: number } | undefined {
    const i = this.at.get(key)
    return i === undefined ? undefined : { count: this.counts[i] as number, error: this.errors[i] as number }
  }

  /** Every counter. */
  entries(): { key: string; count: number; error: number }[] {
    return this.keys.map((key, i) => ({
      key,
      count: this.counts[i] as number,
      error: this.errors[i] as number,
    }))
  }

  private swap(i: number, j: number): void {
    const { keys, counts, errors, at } = this
    ;[keys[i], keys[j]] = [keys[j] as string, keys[i] as string]
    ;[counts[i], counts[j]] = [counts[j] as number, counts[i] as number]
    ;[errors[i], errors[j]] = [errors[j] as number, errors[i] as number]
    at.set(keys[i], i)
    at.set(keys[j], j)
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1
      if ((this.counts[parent] as number) <= (this.counts[i] as number)) return
      this.swap(i, parent)
      i = parent
    }
  }

  private down(i: number): void {
    const n = this.keys.length
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let smallest = i
      if (l < n && (this.counts[l] as number) < (this.counts[smallest] as number)) smallest = l
      if (r < n && (this.counts[r] as number) < (this.counts[smallest] as number)) smallest = r
      if (smallest === i) return
      this.swap(i, smallest)
      i = smallest
    }
  }
}

/** The largest shares seen, by key: at most `capacity`; a newcomer larger than the smallest takes its place. */
class LargestShares {
  private readonly shares = new Map<string, number>()

  constructor(private readonly capacity: number) {}

  see(key: string, share: number): void {
    const known = this.shares.get(key)
    if (known !== undefined || this.shares.size < this.capacity) {
      this.shares.set(key, share)
      return
    }
    // Off the hot path: one request in SAMPLE_EVERY, or a refusal.
    let minKey: string | undefined
    let min = Number.POSITIVE_INFINITY
    for (const [k, s] of this.shares)
      if (s < min) {
        min = s
        minKey = k
      }
    if (share <= min || minKey === undefined) return
    this.shares.delete(minKey)
    this.shares.set(key, share)
  }

  keys(): string[] {
    return [...this.shares.keys()]
  }
}

/** One policy's refusals in two consecutive windows, and its candidates for the largest share. */
class PolicyTop {
  current = new SpaceSaving(TOP_CAPACITY)
  previous = new SpaceSaving(TOP_CAPACITY)
  /** When `current` began (`performance.now()`); `previous` is the window before, if it was directly before. */
  startedAt: number
  readonly shares = new LargestShares(TOP_CAPACITY)

  constructor(
    readonly windowMs: number,
    now: number,
  ) {
    this.startedAt = now
  }

  rotate(now: number): void {
    const elapsed = now - this.startedAt
    if (elapsed < this.windowMs) return
    // A window with no refusal at all in between leaves nothing to remember.
    this.previous = elapsed < 2 * this.windowMs ? this.current : new SpaceSaving(TOP_CAPACITY)
    this.current = new SpaceSaving(TOP_CAPACITY)
    this.startedAt = now - (elapsed % this.windowMs)
  }

  /**
   * Refusals of each key over the last `windowMs`, estimated as a sliding window does: the
   * current window's count, plus the previous one's weighted by how much of it is still inside.
   */
  limited(now: number): Map<string, { count: number; error: number }> {
    this.rotate(now)
    const weight = 1 - (now - this.startedAt) / this.windowMs
    const out = new Map<string, { count: number; error: number }>()
    for (const e of this.current.entries()) out.set(e.key, { count: e.count, error: e.error })
    for (const e of this.previous.entries()) {
      const c = out.get(e.key) ?? { count: 0, error: 0 }
      out.set(e.key, { count: c.count + e.count * weight, error: c.error + e.error * weight })
    }
    for (const [k, c] of out) out.set(k, { count: Math.round(c.count), error: Math.round(c.error) })
    return out
  }
}

/**
 * The heavy hitters of every policy of a limiter (each at its `index`).
 *
 * @example
 * const top = createTopKeys(2, 60_000)
 * top.refused(0, '203.0.113.7', performance.now())
 * top.policy(0).limited(performance.now()).get('203.0.113.7') // { count: 1, error: 0 }
 */
export function createTopKeys(
  policies: number,
  windowMs: number,
): {
  refused(policy: number, key: string, now: number): void
  sampled(policy: number, key: string, share: number): void
  policy(index: number): PolicyTop
} {
  const now = performance.now()
  const tops = Array.from({ length: policies }, () => new PolicyTop(windowMs, now))
  return {
    refused(policy, key, at) {
      const t = tops[policy] as PolicyTop
      t.rotate(at)
      t.current.add(key)
      t.shares.see(key, 1)
    },
    sampled(policy, key, share) {
      ;(tops[policy] as PolicyTop).shares.see(key, share)
    },
    policy: (index) => tops[index] as PolicyTop,
  }
}
