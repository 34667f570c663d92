/**
 * The anomaly engine's metrics, on the instance's registry: the scores the model gives,
 * the verdicts by reason and action, the model's age and growing time, campaigns, and
 * the clients remembered and blocked. Series are found once per label set (reasons are
 * the rules', `model`, `campaign` and `operator`: a fixed set).
 */
import type { Metric } from 'prom-client'
import type { CounterSeries, Metrics } from '../metrics/index.js'
import { SeriesCounter, SeriesHistogram } from '../metrics/series.js'

const SCORE_BUCKETS = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9]
const TRAINING_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

export interface AnomalyMetrics {
  /** The model scored a client. */
  scored(score: number): void
  /** A verdict: `reason` a rule, `model`, `campaign` or `operator`; `action` flag, throttle or block. */
  verdict(reason: string, action: 'flag' | 'throttle' | 'block'): void
  /** A new model, grown in `seconds`, swapped in at `at` (the engine's clock). */
  trained(seconds: number, at: number): void
  /** A campaign began. */
  campaign(kind: string): void
  close(): void
}

/** A gauge read at scrape time (the model's age runs on the engine's clock, maybe a virtual one). */
class ReadGauge {
  readonly type = 'gauge' as const
  readonly aggregator = 'sum' as const
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number | undefined,
  ) {}
  get() {
    const value = this.read()
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: value === undefined ? [] : [{ labels: {}, value }],
    }
  }
  reset(): void {}
}

/**
 * @example
 * const m = anomalyMetrics(metrics, { clients: () => table.size, … })
 * m.verdict('scanner', 'block')
 */
export function anomalyMetrics(
  metrics: Metrics,
  read: { clients: () => number; blocked: () => number; modelAge: () => number | undefined },
): AnomalyMetrics {
  const p = metrics.prefix
  const scores = new SeriesHistogram(
    `${p}anomaly_score`,
    'Scores the anomaly model gave clients',
    SCORE_BUCKETS,
  )
  const verdicts = new SeriesCounter(
    `${p}anomaly_verdicts_total`,
    'Anomaly verdicts, by reason (a rule, model, campaign, operator) and action (flag, throttle, block)',
  )
  const training = new SeriesHistogram(
    `${p}anomaly_training_seconds`,
    'Time to grow each anomaly model, chunks and the waits between them included',
    TRAINING_BUCKETS,
  )
  const campaigns = new SeriesCounter(`${p}anomaly_campaigns_total`, 'Campaigns detected, by kind')
  const gauges = [
    new ReadGauge(`${p}anomaly_model_age_seconds`, 'Age of the anomaly model in use', () => {
      const ms = read.modelAge()
      return ms === undefined ? undefined : ms / 1000
    }),
    new ReadGauge(`${p}anomaly_clients`, 'Clients the anomaly engine remembers', read.clients),
    new ReadGauge(`${p}anomaly_blocked_clients`, 'Clients the anomaly engine blocks now', read.blocked),
  ]
  const all = [scores, verdicts, training, campaigns, ...gauges]
  for (const m of all) metrics.registry.registerMetric(m as unknown as Metric)
  const scoreSeries = scores.add({})
  const trainingSeries = training.add({})
  const series = new Map<string, CounterSeries>()
  const find = (m: SeriesCounter, key: string, labels: Record<string, string>): CounterSeries => {
    let s = series.get(key)
    if (s === undefined) series.set(key, (s = m.add(labels)))
    return s
  }
  return {
    scored: (score) => scores.observe(scoreSeries, score),
    verdict(reason, action) {
      find(verdicts, `v ${reason} ${action}`, { reason, action }).value++
    },
    trained: (seconds) => training.observe(trainingSeries, seconds),
    campaign(kind) {
      find(campaigns, `c ${kind}`, { kind }).value++
    },
    close() {
      for (const m of all) {
        metrics.registry.removeSingleMetric(m.name)
        m.reset()
      }
      series.clear()
    },
  }
}
