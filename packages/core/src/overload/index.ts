/**
 * Load shedding: the overload engine protects the process, not a client's quota.
 * Two guards, both before any rate-limit bucket is charged (a refused request costs a
 * client nothing): the event loop's delay (`limiter.shed`), and an adaptive
 * concurrency limit learned from response latency (`limiter.adaptive`, Netflix's
 * gradient algorithm in adaptive.ts). Their options stay under `limiter`, where they
 * were documented first.
 */
import type { IncomingMessage } from 'node:http'
import type { Engine } from '../kernel/engine.js'
import type { AdmittedState, Rejection } from '../kernel/types.js'
import type { Metrics } from '../metrics/index.js'
import { createAdaptiveLimiter, type AdaptiveConfig } from './adaptive.js'
import { overloaded } from './answers.js'
import { createLoopMonitor, type ShedConfig } from './event-loop.js'

export { adaptiveSchema } from './adaptive.js'
export type { AdaptiveConfig, AdaptiveOptions } from './adaptive.js'
export { shedSchema } from './event-loop.js'
export type { ShedConfig, ShedOptions } from './event-loop.js'

/** The overload engine's own entry points (kept on `shield.limiter`, where they were). */
export interface OverloadApi {
  /** Give back a concurrency slot by hand (a request admitted outside the pipeline). */
  release(latencyMs: number, ok: boolean): void
  /** The adaptive concurrency limit in force, when `adaptive` is on. */
  readonly concurrencyLimit: number | undefined
}

export interface OverloadDeps {
  readonly metrics: Metrics | undefined
  /** Requests never shed (the limiter's `exempt` paths and the metrics path). */
  readonly isExempt: (url: string) => boolean
}

/**
 * `undefined` when both guards are off.
 *
 * @example
 * const engine = overloadEngine({ adaptive: {}, shed: false }, { metrics, isExempt: () => false })
 */
export function overloadEngine(
  config: { readonly adaptive: AdaptiveConfig | false; readonly shed: ShedConfig | false },
  deps: OverloadDeps,
): (Engine & { readonly api: OverloadApi }) | undefined {
  if (config.adaptive === false && config.shed === false) return undefined
  const { metrics, isExempt } = deps
  const adaptive = config.adaptive === false ? undefined : createAdaptiveLimiter(config.adaptive)
  const loop =
    config.shed === false
      ? undefined
      : createLoopMonitor({
          maxLagMs: config.shed.maxEventLoopDelayMs,
          sampleIntervalMs: config.shed.sampleIntervalMs,
        })
  const atConcurrencyLimit = overloaded('concurrency', 1)
  // One answer per Retry-After value: built once each, not per request.
  const shedAnswers = new Map<number, Rejection>()
  const shedAnswer = (retryAfter: number): Rejection => {
    let r = shedAnswers.get(retryAfter)
    if (r === undefined) shedAnswers.set(retryAfter, (r = overloaded('event-loop', retryAfter)))
    return r
  }
  const release = (latencyMs: number, ok: boolean): void => {
    if (adaptive === undefined) return
    adaptive.release(latencyMs, ok)
    metrics?.adaptiveLimit(adaptive.limit)
  }
  return {
    name: 'overload',
    api: {
      release,
      get concurrencyLimit() {
        return adaptive?.limit
      },
    },
    admit(req: IncomingMessage, state) {
      if (isExempt(req.url ?? '/')) return undefined
      if (loop !== undefined && loop.overloaded()) return shedAnswer(loop.retryAfterSeconds)
      if (adaptive === undefined) return undefined
      if (!adaptive.tryAcquire()) return atConcurrencyLimit
      ;(state as AdmittedState).slot = true
      return undefined
    },
    observe(_req, state, seen) {
      const s = state as AdmittedState
      if (!s.slot) return
      s.slot = false
      // Answered by Aegis (the rate limiter refused it, a body outgrew its limit): no latency sample of the app.
      if (s.rejection !== undefined) adaptive?.ignore()
      // Server errors and abandoned requests are the overload signals of the adaptive limit.
      else release(seen.ms, seen.status < 500 && seen.status !== 499)
    },
    close: () => loop?.close(),
  }
}
