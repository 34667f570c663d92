/**
 * Envoy's retry budget: retries in flight may be at most `percent` of the
 * requests in flight, but `minConcurrent` are always allowed. Unlike a fixed
 * retry count, this bounds the extra load retries add during an outage to a
 * fraction of the traffic, whatever the traffic is.
 */
export class RetryBudget {
  /** Requests of the route in flight (first attempts and retries alike). */
  active = 0
  private retrying = 0

  constructor(
    private readonly percent: number,
    private readonly minConcurrent: number,
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
