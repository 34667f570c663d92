/**
 * The upstream balancer of one proxy route: which host gets the next request.
 *
 * A host is a candidate when its circuit breaker lets requests through and it
 * is available — passing active health checks and not ejected by outlier
 * detection. When fewer than `panicThreshold` percent of the hosts are
 * available, health and ejection are ignored (Envoy's panic mode: a health
 * check that wrongly fails everywhere must not take the whole route down);
 * open breakers are never. Then the configured algorithm chooses among the
 * candidates, with recovering hosts at a reduced weight (slow start).
 *
 * Each host's breaker (`breaker/`) is built here and only read, while
 * picking; the gateway asks it before sending (`admits()`) and tells it the
 * outcome (`record()`). Nothing here does I/O: health probes go through the
 * `probe` the gateway passes in, timers are unref'd and `close()` stops them
 * (and the hosts' breakers).
 */
import { guardCallback } from '../kernel/callbacks.js'
import type { IncomingMessage } from 'node:http'
import type { z } from 'zod'
import { createBreaker, type BreakerState, type Outcome } from '../breaker/index.js'
import type { breakerSchema } from '../breaker/options.js'
import { UpstreamHost } from './host.js'
import type { balancerSchema, healthCheckSchema, outlierSchema } from './options.js'
import { HashRing } from './ring.js'
import { SmoothWeightedRoundRobin } from './swrr.js'

export { UpstreamHost, type Outcome } from './host.js'
export { balancerFields } from './options.js'
export type { HashKeyFunction } from './options.js'

export interface BalancerConfig {
  readonly balancer: z.output<typeof balancerSchema>
  readonly healthCheck: z.output<typeof healthCheckSchema>
  readonly outlier: z.output<typeof outlierSchema>
  readonly breaker: z.output<typeof breakerSchema>
  readonly slowStart: number
  readonly panicThreshold: number
}

/** What the balancer reports, for metrics and logs. */
export interface BalancerEvents {
  health?(host: UpstreamHost, healthy: boolean): void
  ejected?(host: UpstreamHost, ms: number): void
  /** `held`: the change is an operator's hold (`gateway.forceBreaker()`), not the breaker's finding. */
  breaker?(host: UpstreamHost, state: BreakerState, held: boolean): void
}

export interface Balancer {
  readonly hosts: readonly UpstreamHost[]
  /**
   * The host for this request, avoiding those in `exclude` (hosts already tried);
   * `undefined` when none can take it.
   */
  pick(req: IncomingMessage, clientKey: string, exclude?: ReadonlySet<UpstreamHost>): UpstreamHost | undefined
  /** A request to `host` started. */
  begin(host: UpstreamHost): void
  /** A request to `host` ended: updates latency, outlier state and ejects when due. */
  end(host: UpstreamHost, outcome: Outcome, latencyMs: number): void
  /** Start active health checks (no-op without them). */
  start(probe: (host: UpstreamHost, path: string, timeoutMs: number) => Promise<boolean>): void
  close(): void
}

/** A cookie's value from a `Cookie` header, without parsing the rest. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

export function createBalancer(
  upstreams: readonly { id: string; weight: number }[],
  config: BalancerConfig,
  events: BalancerEvents = {},
): Balancer {
  const hosts = upstreams.map((u) => {
    const breaker =
      config.breaker === false
        ? undefined
        : createBreaker(config.breaker, (state, held) => {
            h.breakerChanged(state)
            events.breaker?.(h, state, held)
          })
    const h: UpstreamHost = new UpstreamHost(u.id, u.weight, config.slowStart, breaker)
    return h
  })
  const { outlier, panicThreshold } = config
  const maxEjected =
    outlier === false ? 0 : Math.max(1, Math.floor((hosts.length * outlier.maxEjectionPercent) / 100))
  const algorithm = config.balancer
  const swrr = new SmoothWeightedRoundRobin(hosts)
  const ring = typeof algorithm === 'object' ? new HashRing(hosts) : undefined
  const hash = typeof algorithm === 'object' ? algorithm.hash : undefined
  const hashKey = typeof hash === 'function' ? guardCallback('proxy.balancer.hash', hash) : hash
  const timers = new Set<NodeJS.Timeout>()
  let closed = false

  const keyOf = (req: IncomingMessage, clientKey: string): string => {
    if (hashKey === undefined || hashKey === 'client') return clientKey
    let key: string | undefined
    if (typeof hashKey === 'function') key = hashKey(req)
    else if ('header' in hashKey) {
      const v = req.headers[hashKey.header]
      key = Array.isArray(v) ? v[0] : v
    } else key = cookieValue(req.headers.cookie, hashKey.cookie)
    return typeof key === 'string' && key !== '' ? key : clientKey
  }

  /** Two distinct random candidates, the cheaper wins (power of two choices). */
  const twoChoices = (
    candidates: UpstreamHost[],
    cost: (h: UpstreamHost) => number,
  ): UpstreamHost | undefined => {
    const n = candidates.length
    if (n <= 1) return candidates[0]
    const i = Math.floor(Math.random() * n)
    let j = Math.floor(Math.random() * (n - 1))
    if (j >= i) j++
    const a = candidates[i] as UpstreamHost
    const b = candidates[j] as UpstreamHost
    return cost(b) < cost(a) ? b : a
  }

  function pick(
    req: IncomingMessage,
    clientKey: string,
    exclude?: ReadonlySet<UpstreamHost>,
  ): UpstreamHost | undefined {
    const now = performance.now()
    let available = 0
    let enabled = 0
    for (const h of hosts) {
      h.unejectIfDue(now)
      // A drained host is out of the panic count too: draining half a pool is no outage.
      if (h.draining) continue
      enabled++
      if (h.available(now)) available++
    }
    const panic = available * 100 < panicThreshold * enabled
    const usable = (h: UpstreamHost): boolean =>
      !h.draining &&
      (panic || h.available(now)) &&
      (h.breaker === undefined || h.breaker.ready) &&
      (exclude === undefined || !exclude.has(h))
    if (ring !== undefined) return ring.pick(keyOf(req, clientKey), usable)
    if (algorithm === 'round-robin') return swrr.pick((h) => (usable(h) ? h.effectiveWeightAt(now) : 0))
    const candidates = hosts.filter(usable)
    return algorithm === 'least-request'
      ? twoChoices(candidates, (h) => (h.inflight + 1) / h.effectiveWeightAt(now))
      : twoChoices(candidates, (h) => h.cost(now) / h.effectiveWeightAt(now))
  }

  function end(h: UpstreamHost, outcome: Outcome, latencyMs: number): void {
    h.inflight = Math.max(0, h.inflight - 1)
    const now = performance.now()
    if (!h.record(outcome, latencyMs, now, outlier) || outlier === false) return
    let ejected = 0
    for (const x of hosts) if (x.ejectedUntil > now) ejected++
    if (ejected >= maxEjected || h.ejectedUntil > now) return
    const ms = h.eject(now, outlier.baseEjectionTime, outlier.maxEjectionTime)
    events.ejected?.(h, ms)
  }

  function start(probe: (host: UpstreamHost, path: string, timeoutMs: number) => Promise<boolean>): void {
    const hc = config.healthCheck
    if (hc === false) return
    for (const h of hosts) {
      const run = (): void => {
        if (closed) return
        probe(h, hc.path, hc.timeout)
          .catch(() => false)
          .then(
            (passed) => {
              if (closed) return
              const changed = h.check(passed, hc.healthyThreshold, hc.unhealthyThreshold, performance.now())
              if (changed !== undefined) events.health?.(h, changed)
              schedule(hc.interval)
            },
            () => undefined,
          )
      }
      const schedule = (ms: number): void => {
        const t = setTimeout(() => {
          timers.delete(t)
          run()
        }, ms)
        t.unref()
        timers.add(t)
      }
      // Spread the first checks over one interval so hosts are not probed in lockstep.
      schedule(Math.floor(Math.random() * Math.min(hc.interval, 1_000)))
    }
  }

  return {
    hosts,
    pick,
    begin: (h) => void h.inflight++,
    end,
    start,
    close() {
      closed = true
      for (const t of timers) clearTimeout(t)
      timers.clear()
      for (const h of hosts) h.breaker?.close()
    },
  }
}
