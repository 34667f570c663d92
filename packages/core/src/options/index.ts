import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { AegisConfigError, type ConfigIssue } from '../kernel/errors.js'
import { ipv6SubnetSchema, trustProxySchema } from '../client/options.js'
import { corsSection } from '../cors/options.js'
import { headersSection } from '../headers/options.js'
import { limiterSection } from '../limiter/options.js'
import { auditSection } from '../audit/options.js'
import { adminSection } from '../admin/options.js'
import { historySection } from '../history/options.js'
import { breakerDefaultsSchema } from '../breaker/options.js'
import { chaosDefaultsSchema, proxySection, withRouteDefaults } from '../gateway/options.js'
import { storeSchema } from '../store/options.js'
import { anomalySection } from '../anomaly/options.js'
import { ghostSection } from '../ghost/options.js'
import { metricsSection } from '../metrics/options.js'
import { validatorSection } from '../validator/options.js'
import type { Rejection } from '../kernel/types.js'
import { deepFreeze, fn } from '../kernel/option-helpers.js'
import { hideUrlCredentials, SECRET_KEY } from '../kernel/redact.js'
import type { Logger } from '../kernel/logger.js'

export type { Logger }

const logger = z.custom<Logger>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as Logger).info === 'function' &&
    typeof (v as Logger).warn === 'function' &&
    typeof (v as Logger).error === 'function',
  { message: 'expected a pino-compatible logger with info, warn and error methods' },
)

/** Decide per request that Aegis stays out of the way (health probes, internal callers). */
export type SkipFunction = (req: IncomingMessage) => boolean
/** Rewrite a rejection before it is written (custom body, extra headers), or return nothing to keep it. */
export type RejectHook = (rejection: Rejection, req: IncomingMessage) => Rejection | undefined | void

/**
 * The metrics history turns on with the admin API, which serves it, unless `history` says
 * otherwise: `parseOptions()` does this before the schema parses.
 */
function historyWithAdmin(input: unknown): unknown {
  if (typeof input !== 'object' || input === null) return input
  const { admin, history } = input as { admin?: unknown; history?: unknown }
  return admin === undefined || admin === false || history !== undefined ? input : { ...input, history: true }
}

/**
 * The top-level `breaker` and `chaos`, when valid, copied into every raw proxy
 * route that sets none (an invalid one is reported once, at its own path).
 * `parseOptions()` does this before the schema parses; the schema alone
 * validates the options as given.
 */
function inheritRouteDefaults(input: unknown): unknown {
  if (typeof input !== 'object' || input === null) return input
  const { breaker, chaos, proxy } = input as { breaker?: unknown; chaos?: unknown; proxy?: unknown }
  if (!Array.isArray(proxy) || (breaker === undefined && chaos === undefined)) return input
  const defaults = {
    breaker: breakerDefaultsSchema.safeParse(breaker).success ? breaker : undefined,
    chaos: chaosDefaultsSchema.safeParse(chaos).success ? chaos : undefined,
  }
  return { ...input, proxy: proxy.map((route) => withRouteDefaults(route, defaults)) }
}

/** Why `ghost.synthesize` is refused when `NODE_ENV` is `production`. */
export const SYNTHESIZE_IN_PRODUCTION =
  "synthesized answers are for staging and demos: refused when NODE_ENV is production (set 'force' to insist)"
/** Why `ghost.store: 'redis'` is refused without a `store`. */
export const GHOST_NEEDS_STORE = "ghost.store 'redis' needs the store option (Redis or a Redis Cluster)"

/** Why `audit.store: 'redis'` is refused without a `store`. */
export const AUDIT_NEEDS_STORE = "audit.store 'redis' needs the store option (Redis or a Redis Cluster)"

/** Why `breaker.shared` is refused without a `store`. */
export const SHARED_NEEDS_STORE = 'sharing breaker states needs a shared store: set the store option (Redis)'

/** The one schema for every option; defaults live here and the types are inferred from it. */
export const optionsSchema = z
  .strictObject({
    store: storeSchema,
    trustProxy: trustProxySchema,
    ipv6Subnet: ipv6SubnetSchema,
    limiter: limiterSection,
    validator: validatorSection,
    headers: headersSection,
    cors: corsSection,
    /**
     * Anomaly scoring of clients: rules, an Isolation Forest and a campaign detector; on in
     * `observe` mode (score and report, never act) unless `false`.
     */
    anomaly: anomalySection,
    metrics: metricsSection,
    proxy: proxySection,
    /** What every proxy route's breaker starts from (`false`: none); a route's own `breaker` wins. */
    breaker: breakerDefaultsSchema,
    /** Fault injection for every proxy route that sets no `chaos` of its own. */
    chaos: chaosDefaultsSchema,
    /**
     * The ghost cache: learn good GET answers, and answer from them when an upstream or
     * the app fails (`true`: the defaults; off unless set). A proxy route's own `ghost` wins.
     */
    ghost: ghostSection,
    /** The audit trail of upstream state changes and fault-injection switches (`false`: none). */
    audit: auditSection,
    /**
     * The admin REST API (`{ token }` turns it on): its own listener on 127.0.0.1:9901 unless
     * `listen` says otherwise, and the app's `mount` path if given. Off by default.
     */
    admin: adminSection,
    /**
     * The metrics history: a second ring and minute tiers of requests, statuses, rejections,
     * upstreams and the runtime, shared through the store (`true`: the defaults; off unless set).
     */
    history: historySection,
    logger: logger.optional(),
    accessLog: z.boolean().default(false),
    serverTiming: z.boolean().default(false),
    skip: fn<SkipFunction>('(req) => boolean').optional(),
    onReject: fn<RejectHook>('(rejection, req) => rejection | undefined').optional(),
    /** How long `close()` lets in-flight requests of attached servers finish, in ms. */
    closeTimeout: z.int().min(0).max(600_000).default(10_000),
  })
  .refine((o) => !o.accessLog || o.logger !== undefined, {
    message: 'accessLog needs a logger to write to (pass a pino-compatible logger)',
    path: ['accessLog'],
  })
  .superRefine((o, ctx) => {
    // Answers made up from a sibling URL have no place in production unless the operator insists.
    if (process.env.NODE_ENV === 'production') {
      const synthesizes = (g: { synthesize?: unknown } | boolean | undefined): boolean =>
        typeof g === 'object' && g.synthesize === true
      const paths = [
        ...(synthesizes(o.ghost) ? [['ghost', 'synthesize']] : []),
        ...o.proxy.flatMap((r, i) => (synthesizes(r.ghost) ? [['proxy', i, 'ghost', 'synthesize']] : [])),
      ]
      for (const path of paths) ctx.addIssue({ code: 'custom', path, message: SYNTHESIZE_IN_PRODUCTION })
    }
    // Sharing breaker states needs a store to share through: refused before connecting anywhere.
    if (o.store.redis !== undefined || o.store.cluster !== undefined) return
    if (o.ghost !== false && o.ghost.store === 'redis')
      ctx.addIssue({ code: 'custom', path: ['ghost', 'store'], message: GHOST_NEEDS_STORE })
    if (o.audit !== false && o.audit.store === 'redis')
      ctx.addIssue({ code: 'custom', path: ['audit', 'store'], message: AUDIT_NEEDS_STORE })
    const shares = (b: (typeof o)['breaker']): boolean => b !== undefined && b !== false && b.shared
    const paths = [
      ...(shares(o.breaker) ? [['breaker', 'shared']] : []),
      ...o.proxy.flatMap((r, i) => (shares(r.breaker) ? [['proxy', i, 'breaker', 'shared']] : [])),
    ]
    for (const path of paths) ctx.addIssue({ code: 'custom', path, message: SHARED_NEEDS_STORE })
  })

/** What `createAegis()` accepts. Every field is optional. */
export type AegisOptions = z.input<typeof optionsSchema>
/** The parsed, frozen configuration. */
export type AegisConfig = Readonly<z.output<typeof optionsSchema>>

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input
  for (const p of path) {
    if (typeof v !== 'object' || v === null) return undefined
    v = (v as Record<PropertyKey, unknown>)[p]
  }
  return v
}

/** Describe a received value for an error message, without leaking secrets. */
export function describeValue(value: unknown, path: readonly PropertyKey[]): string {
  if (path.some((p) => typeof p === 'string' && SECRET_KEY.test(p))) return '[redacted]'
  if (typeof value === 'function') return '[function]'
  if (value instanceof RegExp) return String(value)
  if (typeof value === 'string') {
    const safe = hideUrlCredentials(value)
    return JSON.stringify(safe.length > 80 ? `${safe.slice(0, 77)}...` : safe)
  }
  if (Array.isArray(value)) return `[array of ${value.length}]`
  if (typeof value === 'object' && value !== null) return '[object]'
  return String(value)
}

function isRootTypeMiss(issue: z.core.$ZodIssue): boolean {
  return issue.path.length === 0 && (issue.code === 'invalid_type' || issue.code === 'invalid_value')
}

function collect(
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[],
  input: unknown,
  out: ConfigIssue[],
): void {
  for (const issue of issues) {
    const path = [...prefix, ...issue.path]
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // A section is `false | {…}`: report the branch the caller meant, not "invalid union".
      const meant = issue.errors.filter((branch) => !branch.every(isRootTypeMiss))
      if (meant.length === 1 && meant[0]) {
        collect(meant[0], path, input, out)
        continue
      }
    }
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        out.push({
          path: [...path, key].join('.'),
          message: 'unknown option',
          segments: segmentsOf([...path, key]),
        })
      }
      continue
    }
    if (issue.code === 'invalid_key') {
      // A refused record key (a header name, a route spec): say why, and show the key, not its value.
      const key = path[path.length - 1]
      out.push({
        path: path.map(String).join('.'),
        message: issue.issues[0]?.message ?? issue.message,
        segments: segmentsOf(path),
        ...(key === undefined ? {} : { received: describeValue(String(key), path.slice(0, -1)) }),
      })
      continue
    }
    const received = valueAt(input, path)
    out.push({
      path: path.map(String).join('.'),
      message: issue.message,
      segments: segmentsOf(path),
      ...(received === undefined ? {} : { received: describeValue(received, path) }),
    })
  }
}

const segmentsOf = (path: readonly PropertyKey[]): (string | number)[] =>
  path.map((p) => (typeof p === 'number' ? p : String(p)))

/** Parse `input` with `schema`, or throw `AegisConfigError` naming every bad path under `prefix`. */
export function parseSection<S extends z.ZodType>(
  schema: S,
  input: unknown,
  prefix: readonly PropertyKey[],
): z.output<S> {
  const result = schema.safeParse(input)
  if (result.success) return deepFreeze(result.data)
  // Paths are reported from the options' root: nest the input the same way.
  const root = prefix.reduceRight<unknown>((inner, key) => ({ [key]: inner }), input)
  const issues: ConfigIssue[] = []
  collect(result.error.issues, prefix, root, issues)
  throw new AegisConfigError(issues)
}

/**
 * Parse and freeze the options; throws `AegisConfigError` naming every bad path.
 *
 * @example
 * const config = parseOptions({ validator: { maxBodyBytes: 65_536 } })
 */
export function parseOptions(input: AegisOptions | undefined = {}): AegisConfig {
  return parseSection(optionsSchema, historyWithAdmin(inheritRouteDefaults(input)), [])
}
