import { Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { MetricsConfig } from './options.js'
import { SeriesCounter, SeriesHistogram, type CounterSeries, type HistogramSeries } from './series.js'

export { metricsSchema } from './options.js'
export type { MetricsOptions, MetricsConfig } from './options.js'
export {
  createRouteLearner,
  templatize,
  OTHER_ROUTE,
  UNMATCHED_ROUTE,
  AEGIS_ROUTE,
} from './route-template.js'

const KNOWN_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
  'TRACE',
  'CONNECT',
])
const STATUS_CLASS = ['1xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const

export type { CounterSeries } from './series.js'
export type LimiterOutcome = 'allowed' | 'limited' | 'blocked' | 'observed'

/** Every metric Aegis records, defined once. Engines add theirs through `registry`. */
export interface Metrics {
  readonly registry: Registry
  readonly prefix: string
  /** Count a finished request and observe its latency. */
  request(method: string, route: string, status: number, seconds: number): void
  /** Count a rejection by reason. */
  rejection(reason: string): void
  /**
   * The counter of limiter decisions for one policy and outcome: allowed, limited,
   * blocked (banned), observed (would be limited). Keep it and increment `value`.
   */
  limiterDecisions(policy: string, outcome: LimiterOutcome): CounterSeries
  /** A failed shared-store command, by reason (timeout, connection, error). */
  storeError(reason: string): void
  /** A decision the in-memory insurance made because the shared store was down. */
  insurance(policy: string): void
  /** Whether the shared store is usable (1) or not (0). */
  storeUp(up: boolean): void
  /** The adaptive concurrency limit in force. */
  adaptiveLimit(limit: number): void
  /** The series of one upstream of a proxy route: find once, keep. */
  upstream(route: string, upstream: string): UpstreamSeries
  /** Retries of a proxy route by outcome (`retried`, `budget-exhausted`). */
  retries(route: string, outcome: 'retried' | 'budget-exhausted'): CounterSeries
  /** The exposition text and its content type. */
  scrape(): Promise<{ contentType: string; body: string }>
  close(): void
}

/** What the gateway records per upstream. */
export interface UpstreamSeries {
  /** Count a finished upstream request by outcome and observe its latency. */
  request(outcome: string, seconds: number): void
  /** Breaker state: 0 closed, 1 half-open, 2 open. */
  readonly breaker: CounterSeries
  /** 1 healthy, 0 failing its active health checks. */
  readonly healthy: CounterSeries
  readonly ejections: CounterSeries
}

/**
 * Create the metrics on the configured registry (a private one by default —
 * never prom-client's global registry). Series are found once per
 * method/route/status class, whose cardinality the route learner bounds.
 *
 * @example
 * const metrics = createMetrics(metricsConfig)
 * metrics.request('GET', '/users/:id', 200, 0.003)
 */
export function createMetrics(config: MetricsConfig): Metrics {
  const registry = config.registry ?? new Registry()
  const p = config.prefix
  const requests = new SeriesCounter(
    `${p}http_requests_total`,
    'HTTP requests by method, route template and status class',
  )
  const duration = new SeriesHistogram(
    `${p}http_request_duration_seconds`,
    'HTTP request latency by method, route template and status class',
    [...config.buckets].sort((a, b) => a - b),
  )
  const rejections = new SeriesCounter(
    `${p}rejections_total`,
    'Requests Aegis answered in place of the app, by reason',
  )
  const decisions = new SeriesCounter(
    `${p}limiter_decisions_total`,
    'Rate-limit decisions by policy and outcome (allowed, limited, blocked, observed)',
  )
  const storeErrors = new SeriesCounter(
    `${p}store_errors_total`,
    'Failed or timed-out shared-store (Redis) commands, by reason',
  )
  const insurance = new SeriesCounter(
    `${p}limiter_insurance_total`,
    'Rate-limit decisions made in memory because the shared store was down, by policy',
  )
  const storeUp = new SeriesCounter(`${p}store_up`, 'Whether the shared store (Redis) is usable', 'gauge')
  const adaptive = new SeriesCounter(
    `${p}adaptive_concurrency_limit`,
    'Concurrency limit set by the adaptive controller',
    'gauge',
  )
  const upstreamRequests = new SeriesCounter(
    `${p}upstream_requests_total`,
    'Requests a proxy route sent upstream, by route, upstream and outcome',
  )
  const upstreamDuration = new SeriesHistogram(
    `${p}upstream_request_duration_seconds`,
    'Upstream response time (to the end of the response) by route and upstream',
    [...config.buckets].sort((a, b) => a - b),
  )
  const breakerState = new SeriesCounter(
    `${p}upstream_breaker_state`,
    'Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open',
    'gauge',
  )
  const upstreamHealthy = new SeriesCounter(
    `${p}upstream_healthy`,
    'Whether an upstream passes its active health checks (1) or not (0)',
    'gauge',
  )
  const ejections = new SeriesCounter(
    `${p}upstream_ejections_total`,
    'Upstreams ejected by outlier detection, by route and upstream',
  )
  const retries = new SeriesCounter(
    `${p}upstream_retries_total`,
    'Retries of proxied requests by route and outcome (retried, budget-exhausted)',
  )
  const counters = [
    rejections,
    decisions,
    storeErrors,
    insurance,
    storeUp,
    adaptive,
    upstreamRequests,
    breakerState,
    upstreamHealthy,
    ejections,
    retries,
  ]
  const ours: string[] = []
  for (const metric of [requests, duration, upstreamDuration, ...counters]) {
    registry.registerMetric(metric as unknown as Metric)
    ours.push(metric.name)
  }
  // One lookup per request: the request's counter and histogram series together.
  const requestSeries = new Map<string, { count: CounterSeries; latency: HistogramSeries }>()
  const rejectionSeries = new Map<string, CounterSeries>()
  const decisionSeries = new Map<string, CounterSeries>()
  const errorSeries = new Map<string, CounterSeries>()
  const insuranceSeries = new Map<string, CounterSeries>()
  const retrySeries = new Map<string, CounterSeries>()
  // Bounded by configuration: routes and upstreams are fixed at startup.
  const upstreamSeries = new Map<string, UpstreamSeries>()
  // Bounded by configuration: policies, outcomes and error reasons are fixed sets.
  const seriesOf = (
    metric: SeriesCounter,
    map: Map<string, CounterSeries>,
    key: string,
    labels: () => Record<string, string>,
  ): CounterSeries => {
    let s = map.get(key)
    if (s === undefined) {
      s = metric.add(labels())
      map.set(key, s)
    }
    return s
  }
  let upSeries: CounterSeries | undefined
  let adaptiveSeries: CounterSeries | undefined
  if (config.defaultMetrics) {
    const before = new Set(registry.getMetricsAsArray().map((m) => m.name))
    collectDefaultMetrics({ register: registry, prefix: p })
    for (const m of registry.getMetricsAsArray()) if (!before.has(m.name)) ours.push(m.name)
  }

  return {
    registry,
    prefix: p,
    request(method, route, status, seconds) {
      const m = KNOWN_METHODS.has(method) ? method : 'OTHER'
      const cls = STATUS_CLASS[Math.floor(status / 100)] ?? 'other'
      const key = `${m} ${cls} ${route}`
      let s = requestSeries.get(key)
      if (s === undefined) {
        const labels = { method: m, route, status_class: cls }
        s = { count: requests.add(labels), latency: duration.add(labels) }
        requestSeries.set(key, s)
      }
      s.count.value++
      duration.observe(s.latency, seconds)
    },
    rejection(reason) {
      let s = rejectionSeries.get(reason)
      if (s === undefined) {
        s = rejections.add({ reason })
        rejectionSeries.set(reason, s)
      }
      s.value++
    },
    limiterDecisions(policy, outcome) {
      return seriesOf(decisions, decisionSeries, `${outcome} ${policy}`, () => ({ policy, outcome }))
    },
    storeError(reason) {
      seriesOf(storeErrors, errorSeries, reason, () => ({ store: 'redis', reason })).value++
    },
    insurance(policy) {
      seriesOf(insurance, insuranceSeries, policy, () => ({ policy })).value++
    },
    storeUp(up) {
      upSeries ??= storeUp.add({ store: 'redis' })
      upSeries.value = up ? 1 : 0
    },
    adaptiveLimit(limit) {
      adaptiveSeries ??= adaptive.add({})
      adaptiveSeries.value = limit
    },
    upstream(route, upstream) {
      const key = `${route} ${upstream}`
      let s = upstreamSeries.get(key)
      if (s === undefined) {
        const labels = { route, upstream }
        const latency = upstreamDuration.add(labels)
        const outcomes = new Map<string, CounterSeries>()
        s = {
          request(outcome, seconds) {
            seriesOf(upstreamRequests, outcomes, outcome, () => ({ route, upstream, outcome })).value++
            upstreamDuration.observe(latency, seconds)
          },
          breaker: breakerState.add(labels),
          healthy: upstreamHealthy.add(labels),
          ejections: ejections.add(labels),
        }
        s.healthy.value = 1
        upstreamSeries.set(key, s)
      }
      return s
    },
    retries(route, outcome) {
      return seriesOf(retries, retrySeries, `${outcome} ${route}`, () => ({ route, outcome }))
    },
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() }
    },
    close() {
      // Leave a user-supplied registry usable but free of our metrics.
      for (const name of ours) registry.removeSingleMetric(name)
      requests.reset()
      duration.reset()
      upstreamDuration.reset()
      for (const m of counters) m.reset()
      for (const m of [
        requestSeries,
        rejectionSeries,
        decisionSeries,
        errorSeries,
        insuranceSeries,
        retrySeries,
        upstreamSeries,
      ])
        m.clear()
    },
  }
}
