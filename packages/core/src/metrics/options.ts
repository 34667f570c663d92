import type { Registry } from 'prom-client'
import { z } from 'zod'
import { section } from '../kernel/option-helpers.js'

const registry = z.custom<Registry>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as Registry).registerMetric === 'function' &&
    typeof (v as Registry).metrics === 'function',
  { message: 'expected a prom-client Registry' },
)

/** Prometheus metrics on a registry of your own (a new one by default, never the global). */
export const metricsSchema = z.strictObject({
  /** The registry to register on. Default: a new Registry owned by this instance. */
  registry: registry.optional(),
  /** Prefix of every metric name. */
  prefix: z
    .string()
    .regex(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/, 'expected a Prometheus metric name prefix')
    .default('aegis_'),
  /** Serve the exposition text at this path (Koa and Fastify; Express may mount `shield.metrics`). */
  path: z.string().startsWith('/').optional(),
  /** Latency histogram buckets, in seconds. */
  buckets: z
    .array(z.number().positive())
    .min(1)
    // prom-client neither sorts nor deduplicates: out of order, an observation lands in
    // the first bound above it and the cumulative `le` counts come out wrong.
    .refine((b) => b.every((v, i) => i === 0 || v > (b[i - 1] as number)), {
      message: 'expected strictly increasing bucket bounds (no duplicates)',
    })
    .default([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  /** Most route templates learned from raw paths before new ones fold into `(other)`. */
  maxRoutes: z.int().min(1).max(100_000).default(500),
  /** Also collect prom-client's process metrics on the registry. */
  defaultMetrics: z.boolean().default(false),
})

export const metricsSection = section(metricsSchema)
export type MetricsOptions = z.input<typeof metricsSchema>
export type MetricsConfig = z.output<typeof metricsSchema>
