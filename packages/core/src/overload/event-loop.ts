/**
 * Load shedding on event-loop lag: when the loop is stalled, every queued request is already late,
 * and admitting more only lengthens the stall.
 *
 * `perf_hooks.monitorEventLoopDelay` samples the loop from native code every `resolutionMs`. An
 * unref'd timer reads the worst delay of the last interval and resets the histogram, so the hot
 * path (`overloaded()`) is a field read. Two details of that histogram matter here:
 * - it records the time between its own timer runs, so an idle loop reads ≈ resolutionMs, which is
 *   subtracted;
 * - reset() also forgets its previous timestamp, so the first delay after a reset is never recorded.
 *   The reading timer's own lateness is therefore taken as a second, independent measure: a stall
 *   that straddles a reading still shows up.
 * Hysteresis: shedding starts above maxLagMs and stops only below exitRatio × maxLagMs, so a lag
 * hovering around the threshold does not flip the answer at every interval.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { z } from 'zod'

/** Event-loop load shedding options, for {@link createLoopMonitor} (`maxLagMs` = maxEventLoopDelayMs). */
export const shedSchema = z.strictObject({
  /**
   * Event-loop delay (ms) above which requests are shed; they are admitted again once it falls
   * below 80 % of it. It is the worst delay of an interval, so keep it above ordinary GC pauses.
   */
  maxEventLoopDelayMs: z.number().min(1).max(60_000).default(200),
  /** How often the delay is read (ms); one stall keeps shedding on for about this long. */
  sampleIntervalMs: z.int().min(10).max(60_000).default(500),
})

/** Shedding options as written by the user (all optional). */
export type ShedOptions = z.input<typeof shedSchema>
/** Shedding options after validation, defaults filled in. */
export type ShedConfig = z.output<typeof shedSchema>

/** Options of {@link createLoopMonitor}. */
export interface LoopMonitorOptions {
  /** Start shedding when the lag of the last interval exceeds this (ms). */
  readonly maxLagMs: number
  /** How often the lag is read (ms); default 500. */
  readonly sampleIntervalMs?: number
  /** Sampling resolution of the delay histogram (ms); default 10. */
  readonly resolutionMs?: number
  /** Stop shedding once the lag falls below this share of maxLagMs; default 0.8. */
  readonly exitRatio?: number
}

/** The part of perf_hooks' IntervalHistogram the monitor uses (values in nanoseconds). */
export interface LoopDelayHistogram {
  readonly max: number
  readonly count: number
  enable(): unknown
  disable(): unknown
  reset(): void
}

/** Injection points, for tests. */
export interface LoopMonitorDeps {
  /** Monotonic clock in ms; default performance.now. */
  readonly now?: () => number
  /** Delay histogram; default monitorEventLoopDelay({ resolution: resolutionMs }). */
  readonly histogram?: LoopDelayHistogram
}

/** Event-loop lag, read periodically; every member is a field read. */
export interface LoopMonitor {
  /** True while requests should be shed. */
  overloaded(): boolean
  /** Worst lag (ms) seen during the last interval. */
  readonly lagMs: number
  /** Suggested Retry-After (seconds, 1–60) for a shed request. */
  readonly retryAfterSeconds: number
  /** Stop the timer and the histogram; the monitor then never reports overload. Idempotent. */
  close(): void
}

const NS_PER_MS = 1e6
const MAX_RETRY_AFTER_S = 60

const positive = (name: string, value: number): number => {
  if (!(value > 0 && value < Infinity))
    throw new RangeError(`${name} must be a positive number, got ${value}`)
  return value
}

/**
 * Watch event-loop lag and say when to shed load.
 *
 * @throws RangeError on a non-positive duration or an exitRatio outside (0, 1].
 *
 * @example
 * const { maxEventLoopDelayMs, sampleIntervalMs } = shedSchema.parse(options)
 * const loop = createLoopMonitor({ maxLagMs: maxEventLoopDelayMs, sampleIntervalMs })
 * if (loop.overloaded()) return reply503(res, loop.retryAfterSeconds)
 * // on shutdown
 * loop.close()
 */
export function createLoopMonitor(options: LoopMonitorOptions, deps: LoopMonitorDeps = {}): LoopMonitor {
  const maxLagMs = positive('maxLagMs', options.maxLagMs)
  const interval = positive('sampleIntervalMs', options.sampleIntervalMs ?? 500)
  const resolution = positive('resolutionMs', options.resolutionMs ?? 10)
  const exitRatio = options.exitRatio ?? 0.8
  if (!(exitRatio > 0 && exitRatio <= 1))
    throw new RangeError(`exitRatio must lie in (0, 1], got ${exitRatio}`)
  const exitBelow = maxLagMs * exitRatio
  const now = deps.now ?? (() => performance.now())
  const histogram = deps.histogram ?? monitorEventLoopDelay({ resolution })

  let lag = 0
  let shedding = false
  let retryAfter = 1
  let closed = false
  let last = now()

  const read = (): void => {
    const t = now()
    const late = t - last - interval
    last = t
    const measured = histogram.count > 0 ? histogram.max / NS_PER_MS - resolution : 0
    histogram.reset()
    lag = Math.max(0, late, measured)
    if (shedding ? lag < exitBelow : lag > maxLagMs) shedding = !shedding
    // Shedding can end at the next reading at the earliest; a long stall suggests a longer backlog.
    retryAfter = Math.min(MAX_RETRY_AFTER_S, Math.max(1, Math.ceil((lag + interval) / 1000)))
  }

  histogram.enable()
  const timer = setInterval(read, interval)
  // Monitoring must never keep the process alive.
  timer.unref()

  return {
    overloaded: () => shedding,
    get lagMs() {
      return lag
    },
    get retryAfterSeconds() {
      return retryAfter
    },
    close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      histogram.disable()
      shedding = false
      lag = 0
    },
  }
}
