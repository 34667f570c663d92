/**
 * The ghost cache's metrics, on the instance's registry: serves by route and reason,
 * what was learned and refused, what is held, and how old the answers served were —
 * so that grace never hides an outage from the operators (docs/ghost.md has the
 * alert rule). Series are found once per label set, as the core metrics' are.
 */
import type { Metric } from 'prom-client'
import type { CounterSeries, Metrics } from '../metrics/index.js'
import { SeriesCounter, SeriesHistogram, type HistogramSeries } from '../metrics/series.js'

/** Buckets of the served age, in seconds: a minute, five, fifteen, an hour, six, a day. */
const AGE_BUCKETS = [1, 10, 60, 300, 900, 3600, 21_600, 86_400]

export interface GhostMetrics {
  /** An answer given from the ghost on `route`, `reason` what failed; `age` in seconds. */
  served(route: string, reason: string, age: number): void
  /** An answer learned on `route`. */
  learned(route: string): void
  /** An answer not learned, and why. */
  refused(route: string, reason: string): void
  /** What the store holds (memory store): entries and bytes. */
  held(entries: number, bytes: number): void
  close(): void
}

/**
 * @example
 * const m = ghostMetrics(metrics)
 * m.served('api', 'status', 12)
 */
export function ghostMetrics(metrics: Metrics): GhostMetrics {
  const p = metrics.prefix
  const serves = new SeriesCounter(
    `${p}ghost_serves_total`,
    'Answers given from the ghost cache, by route and by what failed (status, error, timeout, unavailable)',
  )
  const learned = new SeriesCounter(`${p}ghost_learned_total`, 'Answers the ghost cache learned, by route')
  const refusals = new SeriesCounter(
    `${p}ghost_refusals_total`,
    'Answers the ghost cache would not learn, by route and reason (private, set-cookie, too-large, …)',
  )
  const entries = new SeriesCounter(`${p}ghost_entries`, 'Entries the ghost cache holds in memory', 'gauge')
  const bytes = new SeriesCounter(`${p}ghost_bytes`, 'Bytes the ghost cache holds in memory', 'gauge')
  const age = new SeriesHistogram(
    `${p}ghost_served_age_seconds`,
    'Age of the answers served from the ghost cache, by route',
    AGE_BUCKETS,
  )
  const all = [serves, learned, refusals, entries, bytes, age]
  for (const m of all) metrics.registry.registerMetric(m as unknown as Metric)
  // Bounded: routes are configured, reasons a fixed set.
  const series = new Map<string, CounterSeries>()
  const ages = new Map<string, HistogramSeries>()
  const find = (m: SeriesCounter, key: string, labels: Record<string, string>): CounterSeries => {
    let s = series.get(key)
    if (s === undefined) series.set(key, (s = m.add(labels)))
    return s
  }
  const entriesSeries = entries.add({})
  const bytesSeries = bytes.add({})
  return {
    served(route, reason, seconds) {
      find(serves, `s ${route} ${reason}`, { route, reason }).value++
      let s = ages.get(route)
      if (s === undefined) ages.set(route, (s = age.add({ route })))
      age.observe(s, seconds)
    },
    learned(route) {
      find(learned, `l ${route}`, { route }).value++
    },
    refused(route, reason) {
      find(refusals, `r ${route} ${reason}`, { route, reason }).value++
    },
    held(n, b) {
      entriesSeries.value = n
      bytesSeries.value = b
    },
    close() {
      for (const m of all) {
        metrics.registry.removeSingleMetric(m.name)
        m.reset()
      }
      series.clear()
      ages.clear()
    },
  }
}
