/**
 * The two tiers in memory: a ring of seconds (the last `seconds`) and a ring of minutes
 * (the last `days`), rolled over lazily — the first thing to happen in a new second
 * closes the one before, adds it to its minute, and marks the seconds in between as
 * covered and quiet. No timer is needed for the numbers to be right; the clock is read
 * once per event.
 *
 * Time only moves forward here: a clock stepped back keeps adding to the latest second
 * until it catches up (a minute is never reopened, so nothing is counted twice).
 */
import type { Layout } from './layout.js'
import { C, MAX_REASONS } from './layout.js'

const MINUTES_A_DAY = 1440

/** A row of one tier, found by its time. */
export interface RowRef {
  readonly array: Float64Array
  readonly offset: number
}

/**
 * @example
 * const r = new Recorder(new Layout([1, 10, 100]), 600, 7, Date.now)
 * r.request(200, 3.2)
 */
export class Recorder {
  /** The open second (epoch seconds), `-1` before the first event. */
  open = -1
  private openOff = 0
  private readonly secs: Float64Array
  /** The epoch second each slot of `secs` holds (`-1`: none). */
  private readonly secAt: Float64Array
  /** The minute tier, a day a block, each allocated when first written. */
  private readonly blocks: (Float64Array | undefined)[]
  private readonly minAt: Float64Array
  readonly minuteSlots: number
  /** Reasons with a counter of their own, by reason, and the reverse. */
  private readonly reasons = new Map<string, number>()
  readonly reasonNames: string[] = []
  /** Called with each second closed (the live feed), while set. */
  onSealed: ((second: number, row: RowRef) => void) | undefined

  constructor(
    readonly layout: Layout,
    readonly seconds: number,
    days: number,
    readonly clock: () => number,
  ) {
    this.secs = new Float64Array(seconds * layout.width)
    this.secAt = new Float64Array(seconds).fill(-1)
    this.minuteSlots = days * MINUTES_A_DAY
    this.blocks = Array.from({ length: days }, () => undefined)
    this.minAt = new Float64Array(this.minuteSlots).fill(-1)
  }

  /** The clock, in epoch seconds (a clock that throws or says nonsense stays where it was). */
  private now(): number {
    let ms: number
    try {
      ms = this.clock()
    } catch {
      return this.open
    }
    return Number.isFinite(ms) ? Math.floor(ms / 1000) : this.open
  }

  /** Bring the tiers to second `s`: close what is over. */
  advance(s: number): void {
    const open = this.open
    if (s <= open) return
    const L = this.layout
    if (open >= 0) {
      L.seal(this.secs, this.openOff)
      const m = this.minute(Math.floor(open / 60))
      L.merge(m.array, m.offset, this.secs, this.openOff)
      this.onSealed?.(open, { array: this.secs, offset: this.openOff })
      if (s - open > 1) this.idle(open + 1, s - 1)
    }
    this.open = s
    const slot = s % this.seconds
    this.openOff = slot * L.width
    L.clear(this.secs, this.openOff)
    this.secAt[slot] = s
    this.minute(Math.floor(s / 60))
  }

  /** Seconds `from`…`to` (inclusive) were covered and quiet. */
  private idle(from: number, to: number): void {
    const L = this.layout
    for (let t = Math.max(from, to - this.seconds + 1); t <= to; t++) {
      const slot = t % this.seconds
      const o = slot * L.width
      L.clear(this.secs, o)
      L.seal(this.secs, o)
      this.secAt[slot] = t
      this.onSealed?.(t, { array: this.secs, offset: o })
    }
    const last = Math.floor(to / 60)
    const first = Math.max(Math.floor(from / 60), last - this.minuteSlots + 1)
    for (let m = first; m <= last; m++) {
      const n = Math.min(to, m * 60 + 59) - Math.max(from, m * 60) + 1
      const row = this.minute(m)
      L.idle(row.array, row.offset, n)
    }
  }

  /** Minute `m`'s row, made empty if its slot held an older minute. */
  private minute(m: number): RowRef {
    const slot = m % this.minuteSlots
    const b = Math.floor(slot / MINUTES_A_DAY)
    let block = this.blocks[b]
    if (block === undefined) this.blocks[b] = block = new Float64Array(MINUTES_A_DAY * this.layout.width)
    const offset = (slot % MINUTES_A_DAY) * this.layout.width
    if (this.minAt[slot] !== m) {
      this.layout.clear(block, offset)
      this.minAt[slot] = m
    }
    return { array: block, offset }
  }

  /** Minute `m`'s row if the tier holds it (the open second not in it). */
  minuteRow(m: number): RowRef | undefined {
    const slot = m % this.minuteSlots
    if (m < 0 || this.minAt[slot] !== m) return undefined
    const block = this.blocks[Math.floor(slot / MINUTES_A_DAY)]
    return block === undefined
      ? undefined
      : { array: block, offset: (slot % MINUTES_A_DAY) * this.layout.width }
  }

  /** Second `s`'s row if the ring holds it (the open one unsealed: see `sealedOpen`). */
  secondRow(s: number): RowRef | undefined {
    const slot = s % this.seconds
    if (s < 0 || this.secAt[slot] !== s) return undefined
    return { array: this.secs, offset: slot * this.layout.width }
  }

  /** A sealed copy of the open second, in `into` at 0. */
  sealedOpen(into: Float64Array): void {
    into.set(this.secs.subarray(this.openOff, this.openOff + this.layout.width))
    this.layout.seal(into, 0)
  }

  /** Bring the tiers to now; the open second's offset. */
  tick(): number {
    const s = this.now()
    if (s !== this.open) this.advance(s)
    return this.openOff
  }

  // The request path: a clock read, a comparison, a few additions.

  /**
   * A finished request: its status (499: the client left), its latency, and when it
   * ended (ms since the epoch) if the caller knows it without reading a clock.
   */
  request(status: number, ms: number, at?: number): void {
    let o: number
    if (at === undefined || !Number.isFinite(at)) o = this.tick()
    else {
      const s = Math.floor(at / 1000)
      if (s !== this.open) this.advance(s)
      o = this.openOff
    }
    const a = this.secs
    const L = this.layout
    const s = L.cSum
    a[o + s + C.requests] = (a[o + s + C.requests] as number) + 1
    const cls =
      status === 499 ? C.s499 : status >= 100 && status < 600 ? C.s1xx + Math.floor(status / 100) - 1 : -1
    if (cls >= 0) a[o + s + cls] = (a[o + s + cls] as number) + 1
    if (ms >= 0) L.observe(a, o, 0, ms, 0)
  }

  /** One more of counter `c`. */
  count(c: number): void {
    const o = this.tick() + this.layout.cSum + c
    this.secs[o] = (this.secs[o] as number) + 1
  }

  /** A rejection, by reason: `rejected`, its reason's counter, and `limited` for the limiter's. */
  rejected(reason: string): void {
    const o = this.tick() + this.layout.cSum
    const a = this.secs
    a[o + C.rejected] = (a[o + C.rejected] as number) + 1
    let i = this.reasons.get(reason)
    if (i === undefined) {
      if (this.reasonNames.length < MAX_REASONS) {
        i = C.firstReason + this.reasonNames.length
        this.reasons.set(reason, i)
        this.reasonNames.push(reason)
      } else i = this.layout.other
    }
    a[o + i] = (a[o + i] as number) + 1
    if (reason === 'rate-limit' || reason === 'rate-limit-blocked')
      a[o + C.limited] = (a[o + C.limited] as number) + 1
  }

  /** One upstream exchange, by outcome, and its duration. */
  upstream(outcome: string, ms: number): void {
    const o = this.tick()
    const a = this.secs
    const s = o + this.layout.cSum
    a[s + C.upstreamRequests] = (a[s + C.upstreamRequests] as number) + 1
    if (outcome !== 'success' && outcome !== 'cancelled')
      a[s + C.upstreamErrors] = (a[s + C.upstreamErrors] as number) + 1
    if (ms >= 0) this.layout.observe(a, o, 1, ms, 1)
  }

  /** One sample of value `v` (runtime and Redis stats). */
  sample(v: number, x: number): void {
    if (!Number.isFinite(x)) return
    this.layout.observe(this.secs, this.tick(), v, x)
  }

  /** A counter's name by its index. */
  counterName(i: number, fixed: readonly string[]): string | undefined {
    if (i < C.firstReason) return fixed[i]
    if (i === this.layout.other) return 'rejected.other'
    const reason = this.reasonNames[i - C.firstReason]
    return reason === undefined ? undefined : `rejected.${reason}`
  }
}
