/**
 * Queries: a time range cut into at most a few hundred points, each the merge of the
 * seconds or minutes it spans (sums and counts add, mins and maxes take theirs, buckets
 * add), for this instance or for every instance that shares the store. And the packed
 * minute every instance writes to Redis, read back by name so that instances with other
 * reasons or other bucket bounds still merge.
 */
import { z } from 'zod'
import { AegisArgumentError } from '../kernel/errors.js'
import type { Layout } from './layout.js'
import { COUNTERS, HISTOGRAMS, MAX_REASONS, VALUES, VALUE_NAMES, C } from './layout.js'
import type { Recorder } from './recorder.js'

/** The version of every shape below: a change that breaks a reader bumps it. */
export const HISTORY_VERSION = 1

/** The ranges a query may name, with the step of their points. */
export const RANGES = {
  /** From the seconds ring: 120 points of 5 s. */
  '10m': { span: 600_000, step: 5_000 },
  /** 30 points of a minute. */
  '30m': { span: 1_800_000, step: 60_000 },
  /** 72 points of 5 minutes. */
  '6h': { span: 21_600_000, step: 300_000 },
  /** 96 points of 15 minutes. */
  '24h': { span: 86_400_000, step: 900_000 },
  /** 168 points of an hour. */
  '7d': { span: 604_800_000, step: 3_600_000 },
} as const

export type HistoryRange = keyof typeof RANGES

/** Steps an explicit range may get, shortest first: under a minute only from the seconds ring. */
const STEPS = [
  1_000, 5_000, 10_000, 15_000, 30_000, 60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 10_800_000,
  21_600_000, 43_200_000, 86_400_000,
]
const MAX_POINTS = 1440

/** What `history.query()` takes. */
export interface HistoryQuery {
  /** One of the ranges, ending now (default `'30m'`); or `from` and `to`. */
  readonly range?: HistoryRange
  /** Start, ms since the epoch (with `to`, instead of `range`). */
  readonly from?: number
  /** End, ms since the epoch (default now). */
  readonly to?: number
  /** The step in ms (a divisor of a minute, or a whole number of minutes); chosen when unset. */
  readonly step?: number
  /** Most points wanted when the step is chosen (default 360, at most 1440). */
  readonly points?: number
  /** Series to return, by name or family (`'status.*'`); all when unset. */
  readonly series?: readonly string[]
  /** Merge every instance that shares the store (minute steps only); default: this instance alone. */
  readonly merge?: boolean
  /** Include the latency histograms (default `true`). */
  readonly histograms?: boolean
}

const querySchema = z.strictObject({
  range: z.enum(Object.keys(RANGES) as [HistoryRange, ...HistoryRange[]]).optional(),
  from: z.number().finite().min(0).optional(),
  to: z.number().finite().min(0).optional(),
  step: z
    .int()
    .min(1000)
    .max(86_400_000)
    .refine((s) => (s < 60_000 ? 60_000 % s === 0 && s % 1000 === 0 : s % 60_000 === 0), {
      message: 'expected a divisor of a minute in whole seconds, or whole minutes',
    })
    .optional(),
  points: z.int().min(1).max(MAX_POINTS).optional(),
  series: z.array(z.string().min(1).max(128)).max(256).optional(),
  merge: z.boolean().optional(),
  histograms: z.boolean().optional(),
})

/** One series over the points: `null` where it had no sample. */
export interface SeriesPoints {
  /** `counter`: its samples are counts a second; `value`: observations (latencies, runtime samples). */
  readonly kind: 'counter' | 'value'
  readonly unit: string
  readonly sum: number[]
  /** Samples: seconds covered for a counter, observations for a value. */
  readonly count: number[]
  readonly min: (number | null)[]
  readonly max: (number | null)[]
}

/** A latency histogram over the points: bucket `i` counts samples ≤ `bounds[i]` and above the one before (`null`: the rest). */
export interface HistogramPoints {
  readonly unit: 'ms'
  readonly bounds: (number | null)[]
  /** Per point, the count of each bucket. */
  readonly counts: number[][]
}

/** What `history.query()` and `history.live()` answer. */
export interface HistoryResult {
  readonly version: typeof HISTORY_VERSION
  /** The range named, or `custom`. */
  readonly range: HistoryRange | 'custom' | 'live'
  /** First point's start and the last one's end, ms since the epoch. */
  readonly from: number
  readonly to: number
  readonly step: number
  /** `local`: this instance; `merged`: every instance that shares the store. */
  readonly scope: 'local' | 'merged'
  /** The instances whose numbers are in (this one first). */
  readonly instances: string[]
  /** `false` when instances could not be read from Redis: the numbers are short of theirs. */
  readonly complete: boolean
  /** Each point's start, ms since the epoch. */
  readonly times: number[]
  /** Seconds covered in each point, summed over the instances (0: no instance was up). */
  readonly seconds: number[]
  readonly series: Record<string, SeriesPoints>
  readonly histograms: Record<string, HistogramPoints>
}

/** A resolved query. */
export interface Plan {
  readonly range: HistoryResult['range']
  readonly from: number
  readonly step: number
  readonly points: number
  readonly merge: boolean
  readonly histograms: boolean
  readonly wants: (name: string) => boolean
}

/**
 * Check and resolve a query against `now`. Throws `AegisArgumentError` on bad input.
 *
 * @example
 * plan({ range: '6h' }, Date.now(), 600) // { step: 300000, points: 72, … }
 */
export function plan(query: HistoryQuery | undefined, now: number, ringSeconds: number): Plan {
  const parsed = querySchema.safeParse(query ?? {})
  if (!parsed.success)
    throw new AegisArgumentError(
      `history.query(): ${parsed.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; ')}`,
    )
  const q = parsed.data
  if (q.range !== undefined && (q.from !== undefined || q.to !== undefined))
    throw new AegisArgumentError('history.query() takes a range or from/to, not both')
  const merge = q.merge === true
  let step: number
  let from: number
  let to: number
  let range: Plan['range']
  if (q.from !== undefined) {
    to = q.to ?? now
    if (to <= q.from) throw new AegisArgumentError('history.query(): to must be after from')
    from = q.from
    range = 'custom'
    const want = q.points ?? 360
    step = q.step ?? STEPS.find((s) => (to - from) / s <= want) ?? (STEPS.at(-1) as number)
    // Under a minute, only the seconds ring has the numbers.
    if (q.step === undefined && step < 60_000 && (from < now - ringSeconds * 1000 || merge)) step = 60_000
  } else {
    range = q.range ?? '30m'
    const r = RANGES[range]
    step = Math.max(q.step ?? r.step, merge ? 60_000 : 0)
    // Exactly the range's points, the last one holding now.
    to = Math.floor(now / step) * step + step
    from = to - Math.max(r.span, step)
  }
  if (merge && step < 60_000) step = 60_000
  // Points aligned on the step (on the clock, so two queries agree), the last one holding `to`.
  const end = Math.floor((to - 1) / step) * step + step
  const start = Math.floor(from / step) * step
  const points = Math.round((end - start) / step)
  if (points > MAX_POINTS)
    throw new AegisArgumentError(
      `history.query(): ${points} points; at most ${MAX_POINTS} (take a longer step)`,
    )
  const series = q.series
  const wants =
    series === undefined
      ? () => true
      : (name: string) =>
          series.some((s) => (s.endsWith('.*') ? name.startsWith(s.slice(0, -1)) : s === name))
  return { range, from: start, step, points, merge, histograms: q.histograms !== false, wants }
}

/** Per-series accumulators over the points of a plan. */
interface Acc {
  readonly kind: 'counter' | 'value'
  readonly unit: string
  readonly sum: Float64Array
  readonly count: Float64Array
  readonly min: Float64Array
  readonly max: Float64Array
}

const newAcc = (kind: Acc['kind'], unit: string, n: number): Acc => ({
  kind,
  unit,
  sum: new Float64Array(n),
  count: new Float64Array(n),
  min: new Float64Array(n).fill(Number.POSITIVE_INFINITY),
  max: new Float64Array(n).fill(Number.NEGATIVE_INFINITY),
})

/** Most series a merged answer carries: what Redis returns cannot grow it without bound. */
const MAX_SERIES = 256
const MAX_BOUNDS = 64

/**
 * The points of one answer, filled from local rows and from packed minutes.
 *
 * @example
 * const pts = new Points(plan({ range: '6h' }, now, 600))
 */
export class Points {
  readonly seconds: Float64Array
  private readonly series = new Map<string, Acc>()
  /** Histograms: by name, by upper bound (`Infinity`: the rest). */
  private readonly hists = new Map<string, Map<number, Float64Array>>()
  readonly instances: string[] = []
  complete = true

  constructor(
    readonly plan: Plan,
    bounds: readonly number[],
  ) {
    this.seconds = new Float64Array(plan.points)
    // The fixed series and buckets are always there, even where nothing was seen.
    for (const name of COUNTERS) this.acc(name, 'counter', 'events')
    for (const name of VALUE_NAMES) this.acc(name, 'value', VALUES[name])
    for (const name of HISTOGRAMS)
      for (const bound of [...bounds, Number.POSITIVE_INFINITY]) this.bucket(name, bound)
  }

  /** The point holding time `t` (ms), or -1. */
  pointOf(t: number): number {
    const i = Math.floor((t - this.plan.from) / this.plan.step)
    return i >= 0 && i < this.plan.points ? i : -1
  }

  private acc(name: string, kind: Acc['kind'], unit: string): Acc | undefined {
    let a = this.series.get(name)
    if (a === undefined) {
      if (!this.plan.wants(name) || this.series.size >= MAX_SERIES) return undefined
      this.series.set(name, (a = newAcc(kind, unit, this.plan.points)))
    }
    return a.kind === kind ? a : undefined
  }

  private bucket(name: string, bound: number): Float64Array | undefined {
    if (!this.plan.histograms || !this.plan.wants(name)) return undefined
    let h = this.hists.get(name)
    if (h === undefined) {
      if (this.hists.size >= HISTOGRAMS.length * 4) return undefined
      this.hists.set(name, (h = new Map<number, Float64Array>()))
    }
    let b = h.get(bound)
    if (b === undefined) {
      if (h.size >= MAX_BOUNDS) return undefined
      h.set(bound, (b = new Float64Array(this.plan.points)))
    }
    return b
  }

  private add(a: Acc, p: number, sum: number, count: number, min: number, max: number): void {
    a.sum[p] = (a.sum[p] as number) + sum
    a.count[p] = (a.count[p] as number) + count
    if (min < (a.min[p] as number)) a.min[p] = min
    if (max > (a.max[p] as number)) a.max[p] = max
  }

  /** Add a row of this instance's tiers to point `p`. */
  addRow(p: number, rec: Recorder, array: Float64Array, o: number): void {
    const L = rec.layout
    const covered = array[o] as number
    this.seconds[p] = (this.seconds[p] as number) + covered
    for (let i = 0; i < L.counters; i++) {
      const name = rec.counterName(i, COUNTERS)
      if (name === undefined || (i === L.other && rec.reasonNames.length < MAX_REASONS)) continue
      const a = this.acc(name, 'counter', 'events')
      if (a !== undefined)
        this.add(
          a,
          p,
          array[o + L.cSum + i] as number,
          covered,
          array[o + L.cMin + i] as number,
          array[o + L.cMax + i] as number,
        )
    }
    for (let i = 0; i < L.values; i++) {
      const name = VALUE_NAMES[i] as (typeof VALUE_NAMES)[number]
      const a = this.acc(name, 'value', VALUES[name])
      if (a !== undefined)
        this.add(
          a,
          p,
          array[o + L.vSum + i] as number,
          array[o + L.vCount + i] as number,
          array[o + L.vMin + i] as number,
          array[o + L.vMax + i] as number,
        )
    }
    for (let h = 0; h < HISTOGRAMS.length; h++) {
      for (let b = 0; b < L.buckets; b++) {
        const n = array[o + L.hist + h * L.buckets + b] as number
        if (n === 0) continue
        const bucket = this.bucket(HISTOGRAMS[h] as string, L.bounds[b] ?? Number.POSITIVE_INFINITY)
        if (bucket !== undefined) bucket[p] = (bucket[p] as number) + n
      }
    }
  }

  /** Add a minute another instance packed (see `packMinute`) to point `p`; `false` if it was not one. */
  addPacked(p: number, packed: Packed): void {
    const covered = packed.s
    this.seconds[p] = (this.seconds[p] as number) + covered
    for (const [name, a] of this.series) {
      // A counter a minute does not list was zero in every second it covered.
      if (a.kind === 'counter' && packed.c[name] === undefined && covered > 0)
        this.add(a, p, 0, covered, 0, 0)
    }
    for (const [name, [sum, min, max]] of Object.entries(packed.c)) {
      const a = this.acc(name, 'counter', 'events')
      if (a !== undefined) this.add(a, p, sum, covered, min, max)
    }
    for (const [name, [sum, count, min, max]] of Object.entries(packed.v)) {
      const a = this.acc(name, 'value', (VALUES as Record<string, string>)[name] ?? '')
      if (a !== undefined) this.add(a, p, sum, count, min, max)
    }
    for (const [name, buckets] of Object.entries(packed.h)) {
      for (const [bound, n] of Object.entries(buckets)) {
        const b = this.bucket(name, bound === '+Inf' ? Number.POSITIVE_INFINITY : Number(bound))
        if (b !== undefined) b[p] = (b[p] as number) + n
      }
    }
  }

  /** The answer. */
  result(scope: HistoryResult['scope']): HistoryResult {
    const { plan: q } = this
    const n = q.points
    const times = Array.from({ length: n }, (_, i) => q.from + i * q.step)
    const orNull = (v: number): number | null => (Number.isFinite(v) ? v : null)
    const series: Record<string, SeriesPoints> = {}
    for (const [name, a] of this.series) {
      series[name] = {
        kind: a.kind,
        unit: a.unit,
        sum: Array.from(a.sum),
        count: Array.from(a.count),
        min: Array.from(a.min, orNull),
        max: Array.from(a.max, orNull),
      }
    }
    const histograms: Record<string, HistogramPoints> = {}
    for (const [name, h] of this.hists) {
      const bounds = [...h.keys()].sort((x, y) => x - y)
      const columns = bounds.map((b) => h.get(b) as Float64Array)
      histograms[name] = {
        unit: 'ms',
        bounds: bounds.map(orNull),
        counts: times.map((_, p) => columns.map((c) => c[p] as number)),
      }
    }
    return {
      version: HISTORY_VERSION,
      range: q.range,
      from: q.from,
      to: q.from + n * q.step,
      step: q.step,
      scope,
      instances: this.instances,
      complete: this.complete,
      times,
      seconds: Array.from(this.seconds),
      series,
      histograms,
    }
  }
}

/**
 * Fill `pts` from this instance's tiers: the seconds ring for steps under a minute, the
 * minutes otherwise, the open second included.
 */
export function fillLocal(pts: Points, rec: Recorder, scratch: Float64Array): void {
  const { from, step, points } = pts.plan
  const end = from + step * points
  if (step < 60_000) {
    const first = Math.max(Math.floor(from / 1000), rec.open - rec.seconds + 1)
    for (let s = first; s < rec.open && s * 1000 < end; s++) {
      const row = rec.secondRow(s)
      const p = pts.pointOf(s * 1000)
      if (row !== undefined && p >= 0) pts.addRow(p, rec, row.array, row.offset)
    }
  } else {
    const last = Math.min(Math.floor((end - 1) / 60_000), Math.floor(rec.open / 60))
    const first = Math.max(Math.floor(from / 60_000), last - rec.minuteSlots + 1)
    for (let m = first; m <= last; m++) {
      const row = rec.minuteRow(m)
      const p = pts.pointOf(m * 60_000)
      if (row !== undefined && p >= 0) pts.addRow(p, rec, row.array, row.offset)
    }
  }
  if (rec.open >= 0) {
    const p = pts.pointOf(rec.open * 1000)
    if (p >= 0) {
      rec.sealedOpen(scratch)
      pts.addRow(p, rec, scratch, 0)
    }
  }
}

/** A minute as Redis holds it (JSON): only what is not zero. */
export interface Packed {
  /** Seconds covered. */
  readonly s: number
  /** Counters: `[sum, min, max]`. */
  readonly c: Record<string, readonly [number, number, number]>
  /** Values: `[sum, count, min, max]`. */
  readonly v: Record<string, readonly [number, number, number, number]>
  /** Histograms: count by upper bound (`'+Inf'`: the rest). */
  readonly h: Record<string, Record<string, number>>
}

/** A row as the JSON another instance reads (`Packed`). */
export function packRow(rec: Recorder, array: Float64Array, o: number): string {
  const L: Layout = rec.layout
  const c: Record<string, [number, number, number]> = {}
  for (let i = 0; i < L.counters; i++) {
    const sum = array[o + L.cSum + i] as number
    const name = rec.counterName(i, COUNTERS)
    if (sum > 0 && name !== undefined)
      c[name] = [sum, array[o + L.cMin + i] as number, array[o + L.cMax + i] as number]
  }
  const v: Record<string, [number, number, number, number]> = {}
  for (let i = 0; i < L.values; i++) {
    const count = array[o + L.vCount + i] as number
    if (count > 0)
      v[VALUE_NAMES[i] as string] = [
        array[o + L.vSum + i] as number,
        count,
        array[o + L.vMin + i] as number,
        array[o + L.vMax + i] as number,
      ]
  }
  const h: Record<string, Record<string, number>> = {}
  for (let k = 0; k < HISTOGRAMS.length; k++) {
    let buckets: Record<string, number> | undefined
    for (let b = 0; b < L.buckets; b++) {
      const n = array[o + L.hist + k * L.buckets + b] as number
      if (n === 0) continue
      buckets ??= h[HISTOGRAMS[k] as string] = {}
      buckets[b < L.bounds.length ? String(L.bounds[b]) : '+Inf'] = n
    }
  }
  return JSON.stringify({ s: array[o] as number, c, v, h })
}

const num = z.number().finite()
const nonNegative = num.min(0)
const name = z.string().min(1).max(128)
const packedSchema = z.object({
  s: nonNegative.max(86_400),
  c: z.record(name, z.tuple([nonNegative, nonNegative, nonNegative])),
  v: z.record(name, z.tuple([num, nonNegative, num, num])),
  h: z.record(name, z.record(z.string().max(32), nonNegative)),
})

/** A packed minute read back, or `undefined` when it is not one (another version, or damaged). */
export function unpack(text: string | null | undefined): Packed | undefined {
  if (typeof text !== 'string' || text.length > 256 * 1024) return undefined
  try {
    const parsed = packedSchema.safeParse(JSON.parse(text))
    return parsed.success ? parsed.data : undefined
  } catch {
    return undefined
  }
}

/** A second's counters and values, as the live feed delivers it. */
export interface HistorySecond {
  readonly version: typeof HISTORY_VERSION
  readonly instance: string
  /** The second's start, ms since the epoch. */
  readonly time: number
  /** Counters not zero in that second (`requests` always). */
  readonly counters: Record<string, number>
  /** Values observed in that second. */
  readonly values: Record<string, { sum: number; count: number; min: number; max: number }>
}

/** A sealed second as the live feed delivers it. */
export function secondOf(
  rec: Recorder,
  instance: string,
  second: number,
  array: Float64Array,
  o: number,
): HistorySecond {
  const L = rec.layout
  const counters: Record<string, number> = { requests: array[o + L.cSum + C.requests] as number }
  for (let i = 1; i < L.counters; i++) {
    const n = array[o + L.cSum + i] as number
    const name = n > 0 ? rec.counterName(i, COUNTERS) : undefined
    if (name !== undefined) counters[name] = n
  }
  const values: HistorySecond['values'] = {}
  for (let i = 0; i < L.values; i++) {
    const count = array[o + L.vCount + i] as number
    if (count > 0)
      values[VALUE_NAMES[i] as string] = {
        sum: array[o + L.vSum + i] as number,
        count,
        min: array[o + L.vMin + i] as number,
        max: array[o + L.vMax + i] as number,
      }
  }
  return { version: HISTORY_VERSION, instance, time: second * 1000, counters, values }
}
