/**
 * The metrics history's options. Off unless set (`history: true` or an object turns it
 * on); the admin API turns it on with itself.
 */
import { z } from 'zod'
import { fn } from '../kernel/option-helpers.js'

/** Latency bucket bounds, in ms: from a cache hit to a request that timed out. */
export const DEFAULT_BUCKETS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000]

const bounds = z
  .array(z.number().positive().finite())
  .min(1)
  .max(32)
  .refine((b) => b.every((v, i) => i === 0 || v > (b[i - 1] as number)), {
    message: 'expected increasing bucket bounds',
  })

/** The history when on: what it keeps, for how long, and where it shares it. */
export const historySchema = z.strictObject({
  /** Seconds the per-second ring keeps (the live view and queries at steps under a minute). */
  seconds: z.int().min(60).max(3600).default(600),
  /** Days the minute tier keeps, in memory (about 2 MB a day, allocated as days pass) and in Redis. */
  days: z.int().min(1).max(31).default(7),
  /** Upper bounds of the latency histograms' buckets, in ms (a last bucket takes the rest). */
  buckets: bounds.default(DEFAULT_BUCKETS),
  /**
   * How often the one background timer samples the runtime (event-loop delay, heap, CPU)
   * and closes the seconds, in ms (`0`: no timer; no runtime stats and no Redis flush).
   */
  sampleMs: z.union([z.literal(0), z.int().min(100).max(60_000)]).default(1000),
  /** Add this instance's minutes to Redis when a `store` is configured, so queries can merge all instances. */
  shared: z.boolean().default(true),
  /** How often the minutes go to Redis (and Redis' `INFO` is sampled), in ms. */
  flushMs: z.int().min(1000).max(600_000).default(10_000),
  /** Minutes kept for Redis while it is down; older ones stay in memory only. */
  maxBacklog: z.int().min(1).max(44_640).default(1440),
  /** This instance's name among those sharing the store (`hostname:pid` when unset). */
  instance: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces')
    .optional(),
  /** The history's clock, in ms since the epoch (`Date.now` when unset): tests replay days on a virtual one. */
  clock: fn<() => number>('() => number').optional(),
})

/**
 * The `history` option: `false` (the default) or `true` for the defaults, or the settings.
 *
 * @example
 * historySection.parse(true) // { seconds: 600, days: 7, … }
 */
export const historySection = z
  .union([z.boolean(), historySchema])
  .default(false)
  .transform((v) => (v === true ? historySchema.parse({}) : v))

export type HistoryOptions = z.input<typeof historySection>
/** The `history` option as parsed. */
export type HistoryConfig = z.output<typeof historySection>
export type HistorySettings = z.output<typeof historySchema>
