/**
 * The rows the history keeps: one layout for a second and for a minute (Netdata's
 * tiers: sum, count, min and max per series, never an average), packed in a
 * `Float64Array` so that a request adds to numbers that already exist.
 *
 * A row: `[seconds covered | counters: sums, mins, maxes | values: sums, counts, mins,
 * maxes | histograms: buckets]`. A counter's sample is its count in one second (its min
 * and max are the quietest and busiest seconds, its count the seconds covered); a value's
 * samples are its observations (each request's latency, each runtime sample).
 */

/** Counters every instance has, in row order. */
export const COUNTERS = [
  'requests',
  'status.1xx',
  'status.2xx',
  'status.3xx',
  'status.4xx',
  'status.5xx',
  'status.499',
  'rejected',
  'limited',
  'upstream.requests',
  'upstream.errors',
  'breaker.open',
  'breaker.half-open',
  'breaker.closed',
  'ghost.served',
  'anomaly.flagged',
  'anomaly.blocked',
] as const

/** Rejection reasons with a counter of their own (`rejected.<reason>`); the others add to `rejected.other`. */
export const MAX_REASONS = 16

/** Values (observed samples), in row order, with their unit. */
export const VALUES = {
  latency: 'ms',
  'upstream.latency': 'ms',
  'runtime.loopDelay': 'ms',
  'runtime.loopDelayMax': 'ms',
  'runtime.heapUsed': 'bytes',
  'runtime.heapTotal': 'bytes',
  'runtime.rss': 'bytes',
  'runtime.cpu': 'percent',
  'redis.memory': 'bytes',
  'redis.ops': 'ops/s',
  'redis.clients': 'clients',
  'redis.hits': 'hits/s',
  'redis.misses': 'misses/s',
} as const

export type ValueName = keyof typeof VALUES
export const VALUE_NAMES = Object.keys(VALUES) as ValueName[]
/** The values with a latency histogram, in row order. */
export const HISTOGRAMS = ['latency', 'upstream.latency'] as const

/** Indexes into a row's counters. */
export const C = {
  requests: 0,
  s1xx: 1,
  s499: 6,
  rejected: 7,
  limited: 8,
  upstreamRequests: 9,
  upstreamErrors: 10,
  breakerOpen: 11,
  breakerHalfOpen: 12,
  breakerClosed: 13,
  ghostServed: 14,
  anomalyFlagged: 15,
  anomalyBlocked: 16,
  firstReason: 17,
} as const

/** Indexes into a row's values. */
export const V = {
  latency: 0,
  upstreamLatency: 1,
  loopDelay: 2,
  loopDelayMax: 3,
  heapUsed: 4,
  heapTotal: 5,
  rss: 6,
  cpu: 7,
  redisMemory: 8,
  redisOps: 9,
  redisClients: 10,
  redisHits: 11,
  redisMisses: 12,
} as const

/** Where each part of a row starts, for one set of bucket bounds. */
export class Layout {
  /** Counters: the fixed ones, the reasons' slots, `rejected.other`. */
  readonly counters = COUNTERS.length + MAX_REASONS + 1
  readonly values = VALUE_NAMES.length
  /** Buckets per histogram: one per bound, and the rest. */
  readonly buckets: number
  readonly cSum = 1
  readonly cMin: number
  readonly cMax: number
  readonly vSum: number
  readonly vCount: number
  readonly vMin: number
  readonly vMax: number
  readonly hist: number
  /** Numbers in a row. */
  readonly width: number
  readonly other: number
  /** An empty row: nothing covered, no sample (mins +∞, maxes −∞). */
  readonly empty: Float64Array

  constructor(readonly bounds: readonly number[]) {
    this.buckets = bounds.length + 1
    this.cMin = this.cSum + this.counters
    this.cMax = this.cMin + this.counters
    this.vSum = this.cMax + this.counters
    this.vCount = this.vSum + this.values
    this.vMin = this.vCount + this.values
    this.vMax = this.vMin + this.values
    this.hist = this.vMax + this.values
    this.width = this.hist + HISTOGRAMS.length * this.buckets
    this.other = this.counters - 1
    const e = new Float64Array(this.width)
    e.fill(Number.POSITIVE_INFINITY, this.cMin, this.cMax)
    e.fill(Number.NEGATIVE_INFINITY, this.cMax, this.vSum)
    e.fill(Number.POSITIVE_INFINITY, this.vMin, this.vMax)
    e.fill(Number.NEGATIVE_INFINITY, this.vMax, this.hist)
    this.empty = e
  }

  clear(a: Float64Array, o: number): void {
    a.set(this.empty, o)
  }

  /** Close an open second: covered once, each counter's one sample its count. */
  seal(a: Float64Array, o: number): void {
    a[o] = 1
    const n = this.counters
    for (let i = 0; i < n; i++) {
      const v = a[o + this.cSum + i] as number
      a[o + this.cMin + i] = v
      a[o + this.cMax + i] = v
    }
  }

  /** `n` seconds covered in which nothing happened: every counter saw a zero. */
  idle(a: Float64Array, o: number, n: number): void {
    a[o] = (a[o] as number) + n
    const n2 = this.counters
    for (let i = 0; i < n2; i++) {
      if ((a[o + this.cMin + i] as number) > 0) a[o + this.cMin + i] = 0
      if ((a[o + this.cMax + i] as number) < 0) a[o + this.cMax + i] = 0
    }
  }

  /** Add row `s` into row `d`: sums and counts add, mins and maxes take theirs. */
  merge(d: Float64Array, dOff: number, s: Float64Array, sOff: number): void {
    d[dOff] = (d[dOff] as number) + (s[sOff] as number)
    const { counters, values } = this
    for (let i = 0; i < counters; i++) {
      const sum = this.cSum + i
      const min = this.cMin + i
      const max = this.cMax + i
      d[dOff + sum] = (d[dOff + sum] as number) + (s[sOff + sum] as number)
      if ((s[sOff + min] as number) < (d[dOff + min] as number)) d[dOff + min] = s[sOff + min] as number
      if ((s[sOff + max] as number) > (d[dOff + max] as number)) d[dOff + max] = s[sOff + max] as number
    }
    for (let i = 0; i < values; i++) {
      const sum = this.vSum + i
      const count = this.vCount + i
      const min = this.vMin + i
      const max = this.vMax + i
      d[dOff + sum] = (d[dOff + sum] as number) + (s[sOff + sum] as number)
      d[dOff + count] = (d[dOff + count] as number) + (s[sOff + count] as number)
      if ((s[sOff + min] as number) < (d[dOff + min] as number)) d[dOff + min] = s[sOff + min] as number
      if ((s[sOff + max] as number) > (d[dOff + max] as number)) d[dOff + max] = s[sOff + max] as number
    }
    for (let i = this.hist; i < this.width; i++)
      d[dOff + i] = (d[dOff + i] as number) + (s[sOff + i] as number)
  }

  /** One observation of value `v` (and of its histogram, `h` ≥ 0). No allocation. */
  observe(a: Float64Array, o: number, v: number, x: number, h = -1): void {
    a[o + this.vSum + v] = (a[o + this.vSum + v] as number) + x
    a[o + this.vCount + v] = (a[o + this.vCount + v] as number) + 1
    if (x < (a[o + this.vMin + v] as number)) a[o + this.vMin + v] = x
    if (x > (a[o + this.vMax + v] as number)) a[o + this.vMax + v] = x
    if (h < 0) return
    const bounds = this.bounds
    let b = 0
    while (b < bounds.length && x > (bounds[b] as number)) b++
    const at = o + this.hist + h * this.buckets + b
    a[at] = (a[at] as number) + 1
  }
}
