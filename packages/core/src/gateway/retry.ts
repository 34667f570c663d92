/**
 * Envoy's retry budget: retries in flight may be at most `percent` of the
 * requests in flight, but `minConcurrent` are always allowed. Unlike a fixed
 * retry count, this bounds the extra load retries add during an outage to a
 * fraction of the traffic, whatever the traffic is.
 *
 * A request takes its share through a {@link RetryLease} (`lease()`), which it
 * releases in `finally`: whatever way the request ends, it gives back every slot.
 */
export class RetryBudget {
  /** Requests of the route in flight (first attempts and retries alike). */
  active = 0
  private retrying = 0

  constructor(
    private readonly percent: number,
    private readonly minConcurrent: number,
    /** Told each time a retry is refused for want of a slot (the `budget-exhausted` count). */
    private readonly onExhausted?: () => void,
  ) {}

  /** Take a retry slot if the budget allows one; `release()` it when the retry ends. */
  tryAcquire(): boolean {
    const allowed = Math.max(this.minConcurrent, (this.active * this.percent) / 100)
    if (this.retrying + 1 > allowed) return false
    this.retrying++
    return true
  }

  release(): void {
    this.retrying = Math.max(0, this.retrying - 1)
  }

  /** Retry slots taken and not given back. */
  get inFlight(): number {
    return this.retrying
  }

  /**
   * One request's share: it counts among the requests in flight until `release()`.
   *
   * @example
   * const lease = budget.lease()
   * try { … if (lease.take()) retry … } finally { lease.release() }
   */
  lease(): RetryLease {
    return new RetryLease(this)
  }

  /** A retry was refused for want of a slot. */
  exhausted(): void {
    this.onExhausted?.()
  }
}

/**
 * One request's hold on a {@link RetryBudget}. A retry holds its slot from the moment it
 * is decided (`take()`, possibly while the attempt before it is still running: a held
 * 5xx) until its own attempt ends (`attemptEnded()`); `release()` gives back whatever
 * is left, once, on every way out of the request.
 */
export class RetryLease {
  /** Slots taken for the attempt after the running one (0 or 1). */
  private reserved = 0
  /** The running attempt is a retry holding a slot (0 or 1). */
  private running = 0
  private released = false

  constructor(private readonly budget: RetryBudget) {
    budget.active++
  }

  /** A slot for the next attempt, if the budget has one left (a refusal is counted as exhausted). */
  take(): boolean {
    if (this.released) return false
    if (!this.budget.tryAcquire()) {
      this.budget.exhausted()
      return false
    }
    this.reserved++
    return true
  }

  /** The attempt that just ran has ended: the slot it held, if any, goes back. */
  attemptEnded(): void {
    if (this.running === 0) return
    this.running--
    this.budget.release()
  }

  /** The next attempt starts: it holds the slot taken for it, if one was. */
  nextAttempt(): void {
    this.running += this.reserved
    this.reserved = 0
  }

  /** Give back every slot still held and leave the requests in flight. Idempotent. */
  release(): void {
    if (this.released) return
    this.released = true
    for (let held = this.reserved + this.running; held > 0; held--) this.budget.release()
    this.reserved = this.running = 0
    this.budget.active--
  }
}

/** Methods a client may send twice (RFC 9110 §9.2.2). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** Full-jitter exponential backoff (AWS' "exponential backoff and jitter"), in ms, for retry n ≥ 1. */
export const backoffMs = (n: number, base: number, max: number): number =>
  Math.random() * Math.min(max, base * 2 ** (n - 1))

/** `Retry-After` in milliseconds (delay-seconds or an HTTP date), or `undefined`. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value
  if (v === undefined) return undefined
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}
