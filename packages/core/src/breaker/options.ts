/**
 * The breaker's options: one section per proxy route (`proxy[].breaker`) and the
 * top-level `breaker` every route starts from.
 */
import { z } from 'zod'
import { section } from '../kernel/option-helpers.js'

/** The settings of a breaker, without its on/off switch. */
const breakerSettings = z.strictObject({
  /** Failure percentage over the rolling window that opens the breaker. */
  errorThresholdPercentage: z.number().min(1).max(100).default(50),
  /** Requests in the window before the breaker may open. */
  volumeThreshold: z.int().min(1).max(100_000).default(10),
  /** Milliseconds an open breaker waits before letting a probe through (half-open). */
  resetTimeout: z.int().min(100).max(3_600_000).default(10_000),
  /** Length of the rolling window, in milliseconds. */
  rollingCountTimeout: z.int().min(1_000).max(3_600_000).default(10_000),
  /**
   * Share breaker states with every instance on the same Redis store (`store`):
   * one instance's open breaker opens the others' for that upstream, a recovery
   * closes them.
   */
  shared: z.boolean().default(false),
})

/**
 * Per-upstream circuit breaker (opossum), on by default.
 *
 * @example
 * breakerSchema.parse({ volumeThreshold: 5 }) // { errorThresholdPercentage: 50, volumeThreshold: 5, … }
 * breakerSchema.parse(false) // false: no breaker
 */
export const breakerSchema = section(breakerSettings)

/**
 * The top-level `breaker` option: what every proxy route's breaker starts from
 * (`false`: none), unless the route sets its own. Unset: each route's default.
 *
 * @example
 * breakerDefaultsSchema.parse({ resetTimeout: 5000 }) // every route's breaker waits 5 s before its probe
 */
export const breakerDefaultsSchema = z.union([z.literal(false), breakerSettings]).optional()

/** A breaker's parsed settings (a route with `breaker: false` has none). */
export type BreakerConfig = Exclude<z.output<typeof breakerSchema>, false>
