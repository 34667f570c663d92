/**
 * The circuit breaker of one upstream: closed → open → half-open → closed.
 *
 * Callers ask it before sending (`admits()`) and tell it how the request went
 * (`record()`); it never runs the request itself. The shape follows cockatiel's
 * `CircuitBreakerPolicy` (a state, a state-change notification, a manual hold)
 * without its `execute(fn)`: the gateway's request is a callback-driven undici
 * exchange whose outcome (a 5xx held back for a retry, a client that left) is
 * known only by the gateway, so wrapping it in the breaker's call would mean
 * throwing to say "this failed".
 *
 * Behind it: opossum (DESIGN.md's choice), for its rolling window, thresholds,
 * volume threshold and reset timer.
 */
import type CircuitBreaker from 'opossum'
import { opossum } from '../dependencies.js'
import type { BreakerConfig } from './options.js'

export { breakerSchema, breakerDefaultsSchema, type BreakerConfig } from './options.js'
export {
  createBreakerBus,
  shareBreakers,
  type BreakerBus,
  type BreakerHost,
  type BreakerSharing,
  type SharedBreakerState,
} from './shared.js'

/** Where a breaker stands: `half-open` lets one probe through, whose outcome closes or re-opens it. */
export type BreakerState = 'closed' | 'open' | 'half-open'

/**
 * The counts of a breaker's rolling window (`rollingCountTimeout`), as opossum keeps them:
 * requests asked about (`fires`), their outcomes, and those refused while open or half-open.
 */
export interface BreakerCounts {
  readonly fires: number
  readonly successes: number
  readonly failures: number
  readonly rejects: number
}

/**
 * What an upstream request came to, as the balancer and the breaker count it.
 * `cancelled`: the client left before it was over; the balancer counts it for
 * nothing, the breaker as a success (see `record()`).
 */
export type Outcome = 'success' | 'server-error' | 'connect-error' | 'timeout' | 'error' | 'cancelled'

/**
 * A circuit breaker, asked before each request and told each outcome.
 *
 * @example
 * const breaker = createBreaker(config, (state) => logger.warn({ state }, 'breaker changed'))
 * if (breaker.admits()) {
 *   const outcome = await send()
 *   breaker.record(outcome)
 * }
 */
export interface Breaker {
  readonly state: BreakerState
  /**
   * Whether `admits()` would say yes now — closed, or half-open with its probe
   * not yet sent — without taking anything (what a balancer reads while picking).
   */
  readonly ready: boolean
  /**
   * May a request go now? Closed: yes. Half-open: yes to one request, the probe,
   * and no to the others until its outcome is recorded. Open: no. A yes binds
   * the caller to send the request and `record()` its outcome.
   */
  admits(): boolean
  /**
   * The outcome of a request `admits()` let through. Success closes a half-open
   * breaker; a failure re-opens it, or opens a closed one when the failures in
   * the rolling window reach the threshold (after `volumeThreshold` requests).
   * The new state may show a few microtasks later (opossum decides in promise
   * callbacks).
   */
  record(outcome: Outcome): void
  /** Set the state (another instance's finding, `breaker.shared`): `open` starts the reset timer. */
  force(state: 'open' | 'closed'): void
  /**
   * An operator's hold (`undefined`: none, the breaker decides). Held `open`, it admits
   * nothing and no reset timer lets a probe through; held `closed`, it admits every request.
   * Either way `state` is the held one and the breaker's own transitions stay silent until
   * the hold is lifted, when its own state shows again (and is told, when it differs). Held
   * `closed`, outcomes are still counted, so the lifted breaker decides on fresh counts.
   * Transitions a hold makes are told to `onChange` with `held: true`.
   */
  hold(state: 'open' | 'closed' | undefined): void
  /** The hold in force (`undefined`: none). */
  readonly held: 'open' | 'closed' | undefined
  /** The counts of the rolling window (read for the admin API; a sum over opossum's buckets). */
  readonly counts: BreakerCounts
  /** Stop its timers; it admits nothing after. */
  close(): void
}

const ignore = (): void => {}

/** The failure opossum is told of; nobody else sees it. */
const FAILURE = new Error('upstream request failed')

/**
 * A breaker on opossum. `onChange` hears every transition (including those
 * `force()` makes, and with `held: true` those an operator's `hold()` makes), synchronously; what it throws is dropped, since it may run
 * on opossum's reset timer, where a throw would end the process.
 *
 * opossum decides only inside its own call path: `fire()` counts the request,
 * takes the half-open probe slot and refuses while open; the settling of the
 * fired action's promise counts the outcome and opens or closes the breaker
 * (that decision is a private function of opossum, not an API). So `admits()`
 * is a `fire()` whose action returns a pending promise, and `record()` settles
 * it: opossum sees the same calls, in the same order, as when it ran the
 * request itself. Outcomes settle those promises in admission order. Which
 * request an outcome belongs to does not change what opossum does with it (any
 * success in half-open closes, any failure re-opens, the window only counts),
 * so order is all the matching needs.
 *
 * @example
 * const breaker = createBreaker(breakerSchema.parse({ volumeThreshold: 5 }) as BreakerConfig)
 */
export function createBreaker(
  config: BreakerConfig,
  onChange?: (state: BreakerState, held: boolean) => void,
): Breaker {
  /**
   * Settlers of the admitted requests' promises, oldest first; `null` for a request admitted
   * by a `closed` hold that opossum refused (its outcome settles nothing).
   */
  const pending: ({ resolve: () => void; reject: (err: Error) => void } | null)[] = []
  let held: 'open' | 'closed' | undefined
  const circuit: CircuitBreaker<[], void> = new (opossum())(
    () => new Promise<void>((resolve, reject) => void pending.push({ resolve, reject })),
    {
      // Our timeouts are undici's.
      timeout: false,
      errorThresholdPercentage: config.errorThresholdPercentage,
      volumeThreshold: config.volumeThreshold,
      resetTimeout: config.resetTimeout,
      rollingCountTimeout: config.rollingCountTimeout,
      // Counts only: latency percentiles would keep every call's latency for the whole window and
      // sort them all each second, and nothing here reads snapshots.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    },
  )
  const own = (): BreakerState => (circuit.closed ? 'closed' : circuit.halfOpen ? 'half-open' : 'open')
  const tellNow = (state: BreakerState, byHold: boolean): void => {
    try {
      onChange?.(state, byHold)
    } catch {
      // Nowhere to report it from opossum's timer; the listener's own logging is what failed.
    }
  }
  if (onChange !== undefined) {
    // While held, the breaker's own transitions are not what anyone sees: told when the hold ends.
    const tell = (state: BreakerState) => (): void => {
      if (held === undefined) tellNow(state, false)
    }
    circuit.on('open', tell('open'))
    circuit.on('halfOpen', tell('half-open'))
    circuit.on('close', tell('closed'))
  }
  return {
    get state() {
      return held ?? own()
    },
    get ready() {
      if (held !== undefined) return held === 'closed'
      return circuit.closed || (circuit.halfOpen && circuit.pendingClose)
    },
    get held() {
      return held
    },
    get counts() {
      const s = circuit.stats
      return { fires: s.fires, successes: s.successes, failures: s.failures, rejects: s.rejects }
    },
    admits() {
      if (held === 'open') return false
      // opossum's own test: closed, or the half-open probe slot still free (`fire()` takes it).
      const admitted = circuit.closed || circuit.pendingClose
      const before = pending.length
      // Fired even when refused, as before: opossum counts a refusal in its window (`fires`,
      // `rejects`). Its promise is settled through `record()`; a rejection here is expected.
      circuit.fire().catch(ignore)
      if (held === undefined) return admitted
      // Held closed: admitted whatever opossum says; one it refused records into nothing.
      if (pending.length === before) pending.push(null)
      return true
    },
    hold(state) {
      const before = held ?? own()
      held = state
      const after = held ?? own()
      if (after !== before) tellNow(after, true)
    },
    record(outcome) {
      const settle = pending.shift()
      if (settle === undefined || settle === null) return
      // A client that left counts as a success, as it always did: the upstream was answering, and a
      // half-open breaker whose probe is not settled would wait for a probe forever (opossum has no
      // way to hand the slot back).
      if (outcome === 'success' || outcome === 'cancelled') settle.resolve()
      else settle.reject(FAILURE)
    },
    force(state) {
      if (state === 'open') circuit.open()
      else circuit.close()
    },
    close() {
      pending.length = 0
      held = undefined
      circuit.shutdown()
    },
  }
}
