/**
 * The balancer's view of one upstream: health (active checks), ejection
 * (passive outlier detection), its circuit breaker (asked, not run here), slow
 * start, in-flight requests and peak-EWMA latency. Time is `performance.now()`
 * milliseconds.
 */
import type { Breaker, BreakerState, Outcome } from '../breaker/index.js'

export type { BreakerConfig } from '../breaker/options.js'
export type { Outcome } from '../breaker/index.js'

// Peak EWMA (Finagle / Linkerd): latency decays towards new samples with this time
// constant, but jumps straight up to any sample above it.
const EWMA_DECAY_MS = 10_000
// A host without samples yet costs like this (ms): new hosts get tried, not flooded.
const EWMA_DEFAULT = 1
// Slow start begins at this fraction of the weight (Envoy's min_weight_percent, 10%).
const SLOW_START_FLOOR = 0.1

export class UpstreamHost {
  /** Passing active health checks (always true without them). */
  healthy = true
  private passes = 0
  private fails = 0
  /** Ejected by outlier detection until this time (0: not ejected). */
  ejectedUntil = 0
  /** How many times it was ejected (each ejection lasts longer). */
  ejections = 0
  private lastEjectionEnd = 0
  private consecutive5xx = 0
  private consecutiveConnect = 0
  private consecutiveLocal = 0
  /** Requests sent and not yet finished. */
  inflight = 0
  /**
   * Drained by an operator (`gateway.drain()`): picked for no new request, while those in
   * flight finish (HAProxy's `set server state drain`). Health checks go on.
   */
  draining = false
  /** Requests finished since start (cancelled ones included), and those that failed. */
  requests = 0
  failures = 0
  private ewma = EWMA_DEFAULT
  private ewmaAt = 0
  /** When the host came back (slow start ramps its weight from here); -Infinity: never left. */
  private recoveredAt = Number.NEGATIVE_INFINITY

  constructor(
    /** Stable identity for metrics and logs (`http://10.0.0.5:8080`). */
    readonly id: string,
    readonly weight: number,
    private readonly slowStartMs: number,
    /** Its circuit breaker; the gateway asks it before each request and tells it each outcome. */
    readonly breaker: Breaker | undefined,
  ) {}

  /** Not ejected, passing health checks (whatever its breaker says). */
  available(now: number): boolean {
    return this.healthy && this.ejectedUntil <= now
  }

  /**
   * Drain (`true`) or enable (`false`); returns whether that changed anything. An enabled
   * host comes back with slow start, as after any absence.
   */
  drain(on: boolean): boolean {
    if (this.draining === on) return false
    this.draining = on
    if (!on) this.recover(performance.now())
    return true
  }

  /** Its breaker changed state: one that closed again is back in rotation, with slow start. */
  breakerChanged(state: BreakerState): void {
    if (state === 'closed') this.recover(performance.now())
  }

  /** The weight now: ramped up over the slow-start window after a recovery. */
  effectiveWeightAt(now: number): number {
    const since = now - this.recoveredAt
    if (this.slowStartMs <= 0 || since >= this.slowStartMs) return this.weight
    return this.weight * Math.max(SLOW_START_FLOOR, since / this.slowStartMs)
  }

  /** Peak-EWMA latency (ms) decayed to `now`, times the load it would join. */
  cost(now: number): number {
    const age = now - this.ewmaAt
    const decayed = age > 0 ? this.ewma * Math.exp(-age / EWMA_DECAY_MS) : this.ewma
    return Math.max(decayed, EWMA_DEFAULT) * (this.inflight + 1)
  }

  /** Record a finished request; returns true when it made the host an outlier (eject it). */
  record(
    outcome: Outcome,
    latencyMs: number,
    now: number,
    outlier:
      { consecutive5xx: number; consecutiveConnectErrors: number; consecutiveLocalFailures: number } | false,
  ): boolean {
    this.requests++
    if (outcome === 'cancelled') return false
    if (outcome !== 'success') this.failures++
    if (outcome === 'success' || outcome === 'server-error') {
      const age = now - this.ewmaAt
      const w = Math.exp(-Math.max(0, age) / EWMA_DECAY_MS)
      this.ewma = latencyMs > this.ewma ? latencyMs : this.ewma * w + latencyMs * (1 - w)
      this.ewmaAt = now
    }
    if (outcome === 'success') {
      this.resetCounts()
      return false
    }
    if (outcome === 'server-error') this.consecutive5xx++
    else if (outcome === 'connect-error') this.consecutiveConnect++
    else this.consecutiveLocal++ // a timeout or a reset
    if (outlier === false) return false
    return (
      this.consecutive5xx >= outlier.consecutive5xx ||
      this.consecutiveConnect >= outlier.consecutiveConnectErrors ||
      this.consecutiveLocal >= outlier.consecutiveLocalFailures
    )
  }

  /**
   * Eject for `base × n` ms (n-th ejection), at most `max`. A host that stayed in
   * rotation for `max` since its last ejection starts counting from one again
   * (Envoy lowers its multiplier while a host behaves), so old trouble does not
   * make every later ejection the longest.
   */
  eject(now: number, base: number, max: number): number {
    if (this.ejections > 0 && now - this.lastEjectionEnd >= max) this.ejections = 0
    this.ejections++
    const ms = Math.min(max, base * this.ejections)
    this.ejectedUntil = now + ms
    this.lastEjectionEnd = now + ms
    this.resetCounts()
    return ms
  }

  private resetCounts(): void {
    this.consecutive5xx = 0
    this.consecutiveConnect = 0
    this.consecutiveLocal = 0
  }

  /** An ejection ran out: back in rotation, with slow start. */
  unejectIfDue(now: number): boolean {
    if (this.ejectedUntil === 0 || this.ejectedUntil > now) return false
    this.ejectedUntil = 0
    this.recover(now)
    return true
  }

  /**
   * One active health check result; returns the new health when it changed. A
   * passing check also ends an ejection (Envoy's `successful_active_health_check_uneject_host`):
   * the check is fresher evidence than the errors that ejected it.
   */
  check(passed: boolean, rise: number, fall: number, now: number): boolean | undefined {
    if (passed) {
      this.fails = 0
      if (this.ejectedUntil > now && this.healthy) {
        this.ejectedUntil = 0
        this.recover(now)
      }
      if (this.healthy || ++this.passes < rise) return undefined
      this.healthy = true
      this.passes = 0
      this.recover(now)
      return true
    }
    this.passes = 0
    if (!this.healthy || ++this.fails < fall) return undefined
    this.healthy = false
    this.fails = 0
    return false
  }

  private recover(now: number): void {
    this.recoveredAt = now
  }
}
