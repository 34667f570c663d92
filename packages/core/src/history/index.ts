/**
 * The metrics history: a ring of seconds and minute tiers (sum, count, min, max and
 * latency buckets) of requests, statuses, rejections, upstreams, breakers, ghost serves,
 * anomaly verdicts and the runtime, shared between instances through Redis.
 */
export { historyEngine, type HistoryApi, type HistoryInstance, type HistoryDeps } from './engine.js'
export { historySchema, historySection, DEFAULT_BUCKETS } from './options.js'
export type { HistoryOptions, HistoryConfig, HistorySettings } from './options.js'
export {
  HISTORY_VERSION,
  RANGES,
  type HistoryQuery,
  type HistoryRange,
  type HistoryResult,
  type HistorySecond,
  type SeriesPoints,
  type HistogramPoints,
} from './query.js'
export type { RuntimeStats, RedisStats, RedisNodeStats } from './runtime.js'
export { COUNTERS, VALUES, HISTOGRAMS, MAX_REASONS } from './layout.js'
