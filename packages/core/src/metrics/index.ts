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

/** Every metric Aegis records, defined once. Engines add theirs through `registry`. */
export interface Metrics {
  readonly registry: Registry
  readonly prefix: string
  /** Count a finished request and observe its latency. */
  request(method: string, route: string, status: number, seconds: number): void
  /** Count a rejection by reason. */
  rejection(reason: string): void
  /** The exposition text and its content type. */
  scrape(): Promise<{ contentType: string; body: string }>
  close(): void
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
  const ours: string[] = []
  for (const metric of [requests, duration, rejections]) {
    registry.registerMetric(metric as unknown as Metric)
    ours.push(metric.name)
  }
  // One lookup per request: the request's counter and histogram series together.
  const requestSeries = new Map<string, { count: CounterSeries; latency: HistogramSeries }>()
  const rejectionSeries = new Map<string, CounterSeries>()
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
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() }
    },
    close() {
      // Leave a user-supplied registry usable but free of our metrics.
      for (const name of ours) registry.removeSingleMetric(name)
      requests.reset()
      duration.reset()
      rejections.reset()
      requestSeries.clear()
      rejectionSeries.clear()
    },
  }
}
