import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { addressOrCidr } from '../client/options.js'
import { fn, optInSection, section } from '../kernel/option-helpers.js'
import { adaptiveSchema } from '../overload/adaptive.js'
import { shedSchema } from '../overload/event-loop.js'

/** Which key a request is counted under; return `undefined` to count it by client address. */
export type KeyFunction = (req: IncomingMessage) => string | undefined
/** What a request costs, in points. */
export type CostFunction = (req: IncomingMessage) => number

const cidr = addressOrCidr

/** `[METHOD ]/path`, the path with `:param` segments and an optional trailing `*`. */
export const routeSpec = z
  .string()
  .regex(
    /^(?:[A-Za-z]+ +)?\/[^\s?#]*$/,
    "expected '[METHOD ]/path' (e.g. 'POST /login', '/api/*', 'GET /users/:id')",
  )

const policyName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/, 'expected printable ASCII without quotes or backslashes')

/** One rate-limit policy: `points` per `duration` seconds, admitted at most `burst` at once. */
const policyFields = {
  /** Its name in `RateLimit-Policy`, `RateLimit`, metrics and `violated-policies`. */
  name: policyName.optional(),
  /** Requests (points) allowed per `duration`. */
  points: z.int().min(1).max(1e9),
  /** The window, in seconds. */
  duration: z.number().positive().max(31_536_000),
  /** Most points spent at once (GCRA bucket size); defaults to `points`. */
  burst: z.int().min(1).max(1e9).optional(),
  /** `gcra` (token bucket, default) or `fixed-window` (rate-limiter-flexible's counters). */
  algorithm: z.enum(['gcra', 'fixed-window']).optional(),
  /** Seconds a client stays banned after exceeding this policy; 0: no ban. */
  blockDuration: z.number().min(0).max(31_536_000).optional(),
  /** Count by this key instead of the client address (API key, user id). */
  key: fn<KeyFunction>('(req) => string | undefined').optional(),
  /** Points a request costs (a number, or a function of the request). */
  cost: z.union([z.number().min(0).max(1e9), fn<CostFunction>('(req) => number')]).optional(),
  /** `enforce` answers 429; `observe` counts and reports but never refuses. */
  mode: z.enum(['enforce', 'observe']).optional(),
  /** When the shared store fails: `false` decides in memory (insurance), `true` answers 503. */
  failClosed: z.boolean().optional(),
}

const BURST_NEEDS_GCRA = 'burst applies to the gcra algorithm only (a fixed window admits its points at once)'
const burstNeedsGcra = { message: BURST_NEEDS_GCRA, path: ['burst'] }
const gcraOnly = (p: { algorithm?: string | undefined; burst?: number | undefined }) =>
  p.burst === undefined || p.algorithm !== 'fixed-window'

export const policySchema = z.strictObject(policyFields).refine(gcraOnly, burstNeedsGcra)

const defaults = {
  points: 1000,
  duration: 60,
  algorithm: 'gcra',
  blockDuration: 0,
  cost: 1,
  mode: 'enforce',
  failClosed: false,
} as const

/** The limiter: a default policy for every request, plus per-route ones. */
export const limiterSchema = z
  .strictObject({
    ...policyFields,
    name: policyName.default('default'),
    points: policyFields.points.default(defaults.points),
    duration: policyFields.duration.default(defaults.duration),
    algorithm: policyFields.algorithm.unwrap().default(defaults.algorithm),
    blockDuration: policyFields.blockDuration.unwrap().default(defaults.blockDuration),
    cost: policyFields.cost.unwrap().default(defaults.cost),
    mode: policyFields.mode.unwrap().default(defaults.mode),
    failClosed: policyFields.failClosed.unwrap().default(defaults.failClosed),
    /** Extra policies by route (`'POST /login'`, `'/api/*'`); they add to the default one. */
    routes: z.record(routeSpec, z.union([policySchema, z.array(policySchema).min(1)])).default({}),
    /** Clients (IPs / CIDRs) never limited. */
    allow: z.array(cidr).default([]),
    /** Clients (IPs / CIDRs) always refused with 403. */
    deny: z.array(cidr).default([]),
    /** Routes never limited unless a `routes` entry names them (health probes; the metrics path is added). */
    exempt: z.array(routeSpec).default(['/health', '/healthz', '/livez', '/readyz']),
    /** Which header fields report the limits: the IETF draft's, `RateLimit-Limit/-Remaining/-Reset`, `X-RateLimit-*`. */
    headers: z.union([z.literal(false), z.array(z.enum(['ietf', 'legacy', 'x'])).min(1)]).default(['ietf']),
    /** Most keys a memory store holds per policy (least recently used go first). */
    maxKeys: z.int().min(1).max(100_000_000).default(100_000),
    /** Adaptive concurrency: a limit on requests in flight, learned from their latency. Off unless set. */
    adaptive: optInSection(adaptiveSchema),
    /** Shed load (503) while the event loop lags beyond a bound. Off unless set. */
    shed: optInSection(shedSchema),
  })
  .refine(gcraOnly, burstNeedsGcra)
  .superRefine((limiter, ctx) => {
    // A route policy without its own `algorithm` inherits this one: a fixed window
    // there refuses `burst` as much as a policy that names it.
    if (limiter.algorithm !== 'fixed-window') return
    for (const [spec, entry] of Object.entries(limiter.routes)) {
      const list = Array.isArray(entry) ? entry : [entry]
      list.forEach((policy, i) => {
        if (policy.algorithm !== undefined || policy.burst === undefined) return
        ctx.addIssue({
          code: 'custom',
          message: `${BURST_NEEDS_GCRA}; this policy inherits limiter.algorithm 'fixed-window'`,
          path: ['routes', spec, ...(Array.isArray(entry) ? [i] : []), 'burst'],
        })
      })
    }
  })

export const limiterSection = section(limiterSchema)
export type LimiterOptions = z.input<typeof limiterSchema>
export type LimiterConfig = z.output<typeof limiterSchema>
export type PolicyOptions = z.input<typeof policySchema>
export type PolicyConfig = z.output<typeof policySchema>
