import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { fn, headerName, optInSection, section } from '../kernel/option-helpers.js'
import { breakerSchema } from '../breaker/options.js'

// The breaker's schema lives with the breaker; re-exported here, where it was defined before.
export { breakerSchema, breakerDefaultsSchema } from '../breaker/options.js'

/** A key for consistent hashing (user id, session); `undefined` falls back to the client address. */
export type HashKeyFunction = (req: IncomingMessage) => string | undefined

/**
 * How a route spreads requests over its upstreams:
 * - `round-robin` — smooth weighted round robin (nginx), the default;
 * - `least-request` — power of two choices on in-flight requests per weight;
 * - `peak-ewma` — power of two choices on peak-EWMA latency × in-flight (Linkerd);
 * - `{ hash }` — consistent hashing (sticky): by client address, a header, a cookie
 *   or a function of the request.
 */
export const balancerSchema = z
  .union([
    z.enum(['round-robin', 'least-request', 'peak-ewma']),
    z.strictObject({
      hash: z.union([
        z.literal('client'),
        z.strictObject({ header: headerName.transform((h) => h.toLowerCase()) }),
        z.strictObject({
          cookie: z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a cookie name'),
        }),
        fn<HashKeyFunction>('(req) => string | undefined'),
      ]),
    }),
  ])
  .default('round-robin')

/** Active health checks (HAProxy's `check inter fall rise`): off unless configured. */
export const healthCheckSchema = optInSection(
  z.strictObject({
    /** Path requested with GET on each upstream (after the upstream URL's own path). */
    path: z
      .string()
      .regex(/^\/[^\s#]*$/, "expected a path such as '/health'")
      .default('/health'),
    /** Milliseconds between two checks of one upstream. */
    interval: z.int().min(100).max(3_600_000).default(5_000),
    /** Milliseconds a check may take. */
    timeout: z.int().min(10).max(60_000).default(1_000),
    /** Consecutive passing checks that mark an unhealthy upstream healthy again (`rise`). */
    healthyThreshold: z.int().min(1).max(100).default(2),
    /** Consecutive failing checks that mark a healthy upstream unhealthy (`fall`). */
    unhealthyThreshold: z.int().min(1).max(100).default(3),
  }),
)

/** Passive outlier ejection (Envoy's outlier detection), on by default. */
export const outlierSchema = section(
  z.strictObject({
    /** Consecutive 5xx answers that eject an upstream. */
    consecutive5xx: z.int().min(1).max(1000).default(5),
    /** Consecutive connection failures (refused, unreachable, connect timeout) that eject an upstream. */
    consecutiveConnectErrors: z.int().min(1).max(1000).default(3),
    /**
     * Consecutive failures on an established connection — no answer within the
     * timeouts, or the connection cut mid-answer — that eject an upstream
     * (Envoy's local-origin failures).
     */
    consecutiveLocalFailures: z.int().min(1).max(1000).default(5),
    /** Milliseconds of the first ejection; the n-th lasts n times as long. */
    baseEjectionTime: z.int().min(100).max(3_600_000).default(30_000),
    /** Longest ejection, in milliseconds. */
    maxEjectionTime: z.int().min(100).max(86_400_000).default(300_000),
    /** Most upstreams ejected at once, in percent (at least one may always be ejected). */
    maxEjectionPercent: z.int().min(0).max(100).default(50),
  }),
)

export const balancerFields = {
  balancer: balancerSchema,
  healthCheck: healthCheckSchema,
  outlier: outlierSchema,
  breaker: breakerSchema,
  /** Milliseconds over which a recovered upstream ramps from 10% to its full weight; 0: at once. */
  slowStart: z.int().min(0).max(3_600_000).default(5_000),
  /** When fewer than this percentage of upstreams are available, spread over all of them (Envoy's panic mode). */
  panicThreshold: z.int().min(0).max(100).default(50),
}
