import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { MetricsConfig } from './options.js'

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

type Child = { inc(): void }
type TimerChild = { observe(v: number): void }

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
 * never prom-client's global registry). Label children are cached per
 * method/route/status class, whose cardinality the route learner bounds.
 *
 * @example
 * const metrics = createMetrics(metricsConfig)
 * metrics.request('GET', '/users/:id', 200, 0.003)
 */
export function createMetrics(config: MetricsConfig): Metrics {
  const registry = config.registry ?? new Registry()
  const p = config.prefix
  const requests = new Counter({
    name: `${p}http_requests_total`,
    help: 'HTTP requests by method, route template and status class',
    labelNames: ['method', 'route', 'status_class'] as const,
    registers: [registry],
  })
  const duration = new Histogram({
    name: `${p}http_request_duration_seconds`,
    help: 'HTTP request latency by method, route template and status class',
    labelNames: ['method', 'route', 'status_class'] as const,
    buckets: config.buckets,
    registers: [registry],
  })
  const rejections = new Counter({
    name: `${p}rejections_total`,
    help: 'Requests Aegis answered in place of the app, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  })
  const ours = [`${p}http_requests_total`, `${p}http_request_duration_seconds`, `${p}rejections_total`]
  if (config.defaultMetrics) {
    const before = new Set(registry.getMetricsAsArray().map((m) => m.name))
    collectDefaultMetrics({ register: registry, prefix: p })
    for (const m of registry.getMetricsAsArray()) if (!before.has(m.name)) ours.push(m.name)
  }

  const children = new Map<string, { count: Child; latency: TimerChild }>()
  const rejectionChildren = new Map<string, Child>()

  return {
    registry,
    prefix: p,
    request(method, route, status, seconds) {
      const m = KNOWN_METHODS.has(method) ? method : 'OTHER'
      const cls = STATUS_CLASS[Math.floor(status / 100)] ?? 'other'
      const key = `${m} ${cls} ${route}`
      let child = children.get(key)
      if (child === undefined) {
        const labels = { method: m, route, status_class: cls }
        child = { count: requests.labels(labels), latency: duration.labels(labels) }
        children.set(key, child)
      }
      child.count.inc()
      child.latency.observe(seconds)
    },
    rejection(reason) {
      let child = rejectionChildren.get(reason)
      if (child === undefined) {
        child = rejections.labels({ reason })
        rejectionChildren.set(reason, child)
      }
      child.inc()
    },
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() }
    },
    close() {
      // Leave a user-supplied registry usable but free of our metrics.
      for (const name of ours) registry.removeSingleMetric(name)
      children.clear()
      rejectionChildren.clear()
    },
  }
}
