/**
 * Adaptive concurrency limit: how many requests may be in flight at once, learned from latency.
 *
 * Design (a gradient controller, closest to Envoy's adaptive concurrency filter)
 * ------------------------------------------------------------------------------
 * Sources studied:
 * - Envoy, adaptive concurrency filter, gradient controller
 *   (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/adaptive_concurrency_filter,
 *   source/extensions/filters/http/adaptive_concurrency/controller/gradient_controller.cc).
 * - Netflix concurrency-limits (https://github.com/Netflix/concurrency-limits): Gradient2Limit,
 *   VegasLimit, AIMDLimit and WindowedLimit.
 *
 * What the two teach, in short. Envoy learns the unloaded latency ("minRTT") by periodically letting
 * only a handful of requests through and aggregating their latencies to a percentile; between those
 * measurements it summarises each short window to a percentile and scales the limit by the ratio of
 * the buffered baseline to that summary, clamped to [0.5, 2], then adds a square-root headroom so the
 * limit keeps probing upwards. It re-measures early when the limit sits at its floor for several
 * windows, and jitters the re-measurement interval so a fleet does not dip in unison. Gradient2
 * instead compares a short-term RTT with a long, exponentially averaged one, which needs no dip but
 * lets the baseline creep up under sustained load (it later has to decay it back by hand); it also
 * refuses to grow a limit the traffic never approached. Vegas estimates the queue from
 * limit × (1 − minRTT / RTT) and, like AIMD, treats a dropped request as a reason to back off.
 *
 * Choice. The baseline here is measured, not averaged, so a sustained overload can never be
 * mistaken for the new normal (the flaw Gradient2 works around), and decisions are made once per
 * window on a percentile, so one slow request cannot move the limit. Above the capacity C of a
 * queueing service, latency grows in proportion to concurrency, so the gradient step maps any limit
 * to the same value, ≈ (1 + tolerance) × C + √limit: a single fixed point, approached geometrically
 * through the smoothing, hence no oscillation under a steady latency. From concurrency-limits it
 * takes the app-limited rule (no growth unless traffic reached half the limit), smoothing of each
 * step, and a multiplicative back-off when too many requests fail. A drifting baseline is only
 * ever replaced by a fresh measurement, taken every `minRttIntervalMs` (jittered), after five
 * windows pinned at the floor (Envoy's rule), and also as soon as the baseline is in doubt: the
 * limit has halved since the last measurement (the service may have got slower: with the √limit
 * headroom a twice-slower service settles well above a small floor, so Envoy's rule alone would wait
 * for the periodic measurement), or a window ran clearly faster than the baseline (the service got
 * faster; lowering the baseline to that window's value would still include queueing).
 *
 * Cost: tryAcquire/release touch a few numbers and a preallocated ring; the percentile is an
 * in-place selection once per window. No timers: everything is driven by release() and the clock.
 */
import { z } from 'zod'

/** Options of the adaptive concurrency limiter; every field has a default. */
export const adaptiveSchema = z
  .strictObject({
    /** Limit used once the first baseline is measured, before any adjustment. */
    initialLimit: z.int().min(1).max(100_000).default(20),
    /** Floor of the limit; also the concurrency allowed while the baseline is measured. */
    minLimit: z.int().min(1).max(100_000).default(4),
    /** Ceiling of the limit. */
    maxLimit: z.int().min(1).max(100_000).default(1000),
    /** How far above the baseline (as a fraction) window latency may go before the limit shrinks. */
    tolerance: z.number().min(0).max(10).default(0.25),
    /** Weight of each new estimate: 1 takes it whole, smaller is steadier but slower. */
    smoothing: z.number().gt(0).max(1).default(0.5),
    /** Percentile (0–100] that summarises the latencies of a window or of a baseline measurement. */
    percentile: z.number().gt(0).max(100).default(50),
    /** Shortest duration of a sample window, in milliseconds. */
    windowMs: z.number().min(1).max(60_000).default(500),
    /** Fewest completed requests (successes and failures) before a window is evaluated. */
    minWindowSamples: z.int().min(1).max(100_000).default(10),
    /** How often the baseline (unloaded latency) is measured again, in milliseconds, before jitter. */
    minRttIntervalMs: z.number().min(100).max(86_400_000).default(60_000),
    /** Random extra delay added to each interval, as a fraction of it, so a fleet does not dip together. */
    minRttJitter: z.number().min(0).max(1).default(0.15),
    /**
     * Successful requests aggregated into one baseline measurement, which thus lasts about
     * probeSamples / minLimit request latencies (shedding down to minLimit meanwhile).
     */
    probeSamples: z.int().min(1).max(1024).default(25),
    /** Share of failed requests in a window above which the limit backs off. */
    dropTolerance: z.number().min(0).max(1).default(0.05),
    /** Factor applied to the limit when a window has too many failures. */
    backoffRatio: z.number().min(0.5).max(0.99).default(0.9),
  })
  .refine((o) => o.minLimit <= o.maxLimit, {
    message: 'minLimit must not exceed maxLimit',
    path: ['minLimit'],
  })
  .refine((o) => o.initialLimit >= o.minLimit && o.initialLimit <= o.maxLimit, {
    message: 'initialLimit must lie between minLimit and maxLimit',
    path: ['initialLimit'],
  })

/** Options as written by the user (all optional). */
export type AdaptiveOptions = z.input<typeof adaptiveSchema>
/** Options after validation, defaults filled in. */
export type AdaptiveConfig = z.output<typeof adaptiveSchema>

/** A snapshot of the limiter for metrics and debugging. */
export interface AdaptiveStats {
  /** Limit enforced now (the floor while the baseline is being measured). */
  readonly limit: number
  /** Unrounded estimate the limit is derived from; kept while the baseline is measured. */
  readonly estimate: number
  /** Requests admitted and not yet released. */
  readonly inflight: number
  /** Unloaded latency in ms; 0 until first measured. */
  readonly baselineMs: number
  /** Percentile latency of the last evaluated window, in ms; 0 before the first. */
  readonly sampleMs: number
  /** Gradient applied by the last window (1 = no change from latency). */
  readonly gradient: number
  /** True while the baseline is being measured under a reduced limit. */
  readonly probing: boolean
  /** Windows evaluated so far. */
  readonly windows: number
  /** Baseline measurements completed so far. */
  readonly probes: number
  /** tryAcquire() calls refused so far. */
  readonly rejected: number
  /** Failed requests (release with ok = false) so far. */
  readonly dropped: number
}

/** A concurrency limiter whose limit follows the latency of the requests it admits. */
export interface AdaptiveLimiter {
  /** Take a slot; false means the limit is reached and the request should be shed. */
  tryAcquire(): boolean
  /**
   * Give back the slot of an admitted request. `ok` is false when it timed out or failed from
   * overload (not for client errors): such failures push the limit down and their latency is not
   * used, since a fast failure says nothing about the service.
   */
  release(latencyMs: number, ok: boolean): void
  /** Give back a slot without a sample (e.g. a long-lived stream whose duration means nothing). */
  ignore(): void
  /** Limit enforced now. */
  readonly limit: number
  /** Requests admitted and not yet released. */
  readonly inflight: number
  /** A snapshot for metrics; it allocates, so keep it off the per-request path. */
  stats(): AdaptiveStats
}

// Clamp of the per-window gradient, as in Envoy: at most halve or double the limit per window.
const GRADIENT_MIN = 0.5
const GRADIENT_MAX = 2
// Latencies below this (ms) are clock resolution, not signal; it also keeps the ratio finite.
const LATENCY_FLOOR_MS = 0.001
// No growth unless the window reached this share of the limit (concurrency-limits' app-limited rule).
const APP_LIMITED_RATIO = 0.5
// Windows pinned at the floor after which the baseline is suspected stale and measured again.
const REMEASURE_AFTER_FLOOR_WINDOWS = 5
// Measure again once the estimate fell to this share of its peak since the last measurement.
const REMEASURE_AFTER_FALL = 0.5
// Measure again when a window's latency is below this share of the baseline: the service got faster.
const FASTER_RATIO = 0.8
// Samples kept per window; beyond this the ring keeps the most recent ones. Power of two for masking.
const RING_SIZE = 1024

/**
 * A concurrency limiter that learns its limit from latency (a gradient controller after Envoy's
 * adaptive concurrency filter; see the comment at the top of this file).
 *
 * It starts by measuring the unloaded latency with only `minLimit` requests in flight, then
 * evaluates a window every `windowMs` (once `minWindowSamples` requests completed).
 *
 * @param options validated with {@link adaptiveSchema}; throws a ZodError when invalid.
 * @param clock monotonic milliseconds; inject a fake one in tests.
 * @param random source of jitter in [0, 1).
 *
 * @example
 * const limiter = createAdaptiveLimiter({ maxLimit: 200 })
 * if (!limiter.tryAcquire()) return shed(res)
 * const start = performance.now()
 * res.on('finish', () => limiter.release(performance.now() - start, res.statusCode !== 503))
 */
export function createAdaptiveLimiter(
  options: AdaptiveOptions = {},
  clock: () => number = () => performance.now(),
  random: () => number = Math.random,
): AdaptiveLimiter {
  return new GradientLimiter(adaptiveSchema.parse(options), clock, random)
}

class GradientLimiter implements AdaptiveLimiter {
  private readonly ring = new Float64Array(RING_SIZE)
  // Successful samples in the current window or measurement (may exceed RING_SIZE).
  private samples = 0
  private drops = 0
  private peakInflight = 0
  private windowStart: number
  private active = 0
  private current: number
  private estimate: number
  private baseline = 0
  private lastSample = 0
  private lastGradient = 1
  private probing = true
  private probeStart: number
  private nextProbeAt = Infinity
  private floorWindows = 0
  private peakEstimate = 0
  private windows = 0
  private probes = 0
  private rejected = 0
  private dropped = 0

  constructor(
    private readonly cfg: AdaptiveConfig,
    private readonly clock: () => number,
    private readonly random: () => number,
  ) {
    const now = clock()
    this.estimate = cfg.initialLimit
    // No baseline yet: measure it first, as Envoy does at start-up.
    this.current = cfg.minLimit
    this.windowStart = now
    this.probeStart = now
  }

  get limit(): number {
    return this.current
  }

  get inflight(): number {
    return this.active
  }

  tryAcquire(): boolean {
    if (this.active >= this.current) {
      this.rejected++
      return false
    }
    if (++this.active > this.peakInflight) this.peakInflight = this.active
    return true
  }

  release(latencyMs: number, ok: boolean): void {
    if (this.active > 0) this.active--
    const now = this.clock()
    if (!ok) {
      this.drops++
      this.dropped++
    } else if (latencyMs >= 0 && latencyMs < Infinity) {
      // A measurement only counts requests admitted under the reduced limit (started after it began).
      if (!this.probing || now - latencyMs >= this.probeStart) {
        this.ring[this.samples & (RING_SIZE - 1)] = latencyMs
        this.samples++
      }
    }
    if (this.probing) this.maybeEndProbe(now)
    else if (
      now - this.windowStart >= this.cfg.windowMs &&
      this.samples + this.drops >= this.cfg.minWindowSamples
    )
      this.closeWindow(now)
  }

  ignore(): void {
    if (this.active > 0) this.active--
  }

  stats(): AdaptiveStats {
    return {
      limit: this.current,
      estimate: this.estimate,
      inflight: this.active,
      baselineMs: this.baseline,
      sampleMs: this.lastSample,
      gradient: this.lastGradient,
      probing: this.probing,
      windows: this.windows,
      probes: this.probes,
      rejected: this.rejected,
      dropped: this.dropped,
    }
  }

  private closeWindow(now: number): void {
    const { cfg } = this
    const prev = this.estimate
    let next = prev
    let faster = false
    if (this.samples > 0) {
      const sample = Math.max(this.aggregate(), LATENCY_FLOOR_MS)
      if (sample < this.baseline * FASTER_RATIO) faster = true
      const raw = (this.baseline * (1 + cfg.tolerance)) / sample
      const gradient = raw < GRADIENT_MIN ? GRADIENT_MIN : raw > GRADIENT_MAX ? GRADIENT_MAX : raw
      // The square-root headroom keeps probing upwards; it is what the fixed point settles on.
      let proposed = prev * gradient + Math.sqrt(prev)
      // Traffic that never approached the limit proves nothing about a higher one.
      if (proposed > prev && this.peakInflight < prev * APP_LIMITED_RATIO) proposed = prev
      next = prev + cfg.smoothing * (proposed - prev)
      this.lastSample = sample
      this.lastGradient = gradient
    }
    if (this.drops > 0 && this.drops > (this.samples + this.drops) * cfg.dropTolerance)
      next = Math.min(next, prev * cfg.backoffRatio)
    next = next < cfg.minLimit ? cfg.minLimit : next > cfg.maxLimit ? cfg.maxLimit : next
    this.estimate = next
    this.current = Math.floor(next)
    this.windows++
    this.floorWindows = this.current <= cfg.minLimit ? this.floorWindows + 1 : 0
    if (next > this.peakEstimate) this.peakEstimate = next
    this.resetWindow(now)
    // A service that merely got slower looks, at any single window, exactly like an overloaded one
    // (the step has a fixed point either way), so the baseline is measured again when it is most in
    // doubt: after a large fall of the limit, or when pinned at the floor. Shedding is already
    // heavy then, which makes the short dip to minLimit cheap.
    if (
      faster ||
      now >= this.nextProbeAt ||
      this.floorWindows >= REMEASURE_AFTER_FLOOR_WINDOWS ||
      next <= this.peakEstimate * REMEASURE_AFTER_FALL
    )
      this.startProbe(now)
  }

  private startProbe(now: number): void {
    this.probing = true
    this.probeStart = now
    this.current = this.cfg.minLimit
    this.resetWindow(now)
  }

  private maybeEndProbe(now: number): void {
    const { cfg } = this
    // No time limit: cutting a measurement short would keep only the requests that finished first,
    // the fastest ones, and bias the baseline low. While everything fails it stays at the floor.
    if (this.samples < cfg.probeSamples) return
    this.baseline = Math.max(this.aggregate(), LATENCY_FLOOR_MS)
    this.probing = false
    this.probes++
    this.floorWindows = 0
    this.peakEstimate = this.estimate
    // The estimate was left untouched during the measurement: restore it.
    this.current = Math.floor(this.estimate)
    const jitter = cfg.minRttJitter > 0 ? cfg.minRttJitter * this.random() : 0
    this.nextProbeAt = now + cfg.minRttIntervalMs * (1 + jitter)
    this.resetWindow(now)
  }

  private resetWindow(now: number): void {
    this.samples = 0
    this.drops = 0
    this.peakInflight = this.active
    this.windowStart = now
  }

  /** The configured percentile of the kept samples (nearest rank), selected in place. */
  private aggregate(): number {
    const n = this.samples < RING_SIZE ? this.samples : RING_SIZE
    const rank = Math.ceil((this.cfg.percentile / 100) * n) - 1
    return select(this.ring, n, rank < 0 ? 0 : rank)
  }
}

/** The k-th smallest of a[0..n) (Hoare quickselect); reorders that range, allocates nothing. */
function select(a: Float64Array, n: number, k: number): number {
  let lo = 0
  let hi = n - 1
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!
    let i = lo
    let j = hi
    while (i <= j) {
      while (a[i]! < pivot) i++
      while (a[j]! > pivot) j--
      if (i <= j) {
        const t = a[i]!
        a[i] = a[j]!
        a[j] = t
        i++
        j--
      }
    }
    if (k <= j) hi = j
    else if (k >= i) lo = i
    else break
  }
  return a[k]!
}
