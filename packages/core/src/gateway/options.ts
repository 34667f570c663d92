import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { balancerFields } from '../balancer/options.js'
import { addressOrCidr } from '../client/options.js'
import { routeGhostSchema } from '../ghost/options.js'
import { fn, headerName, section } from '../kernel/option-helpers.js'
import { checkCertificatePair, pemCertificates, pemPrivateKey } from '../options/tls.js'
import type { LookupFunction } from './targets.js'

/** Choose the upstream of one request at run time: a URL, or `undefined` for the route's `upstreams`. */
export type RouterFunction = (req: IncomingMessage) => string | URL | undefined
import { parseUpstreamUrl } from './upstream-url.js'

const upstreamUrl = z.string().superRefine((s, ctx) => {
  try {
    parseUpstreamUrl(s)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/** One upstream: a URL, or a URL with a weight. */
const upstream = z.union([
  upstreamUrl.transform((url) => ({ url, weight: 1 })),
  z.strictObject({
    url: upstreamUrl,
    /** Share of requests relative to the other upstreams (smooth weighted round robin). */
    weight: z.int().min(1).max(1000).default(1),
  }),
])

/** A path prefix: `/` or `/segments` without a trailing slash, query or fragment. */
const prefix = z
  .string()
  .regex(
    /^\/(?:[^\s?#]*[^\s?#/])?$/,
    "expected '/' or a path such as '/api' (no trailing slash, query or fragment)",
  )

const timeouts = z
  .strictObject({
    /** Milliseconds to open a connection (TCP and TLS) to an upstream → 504. */
    connect: z.int().min(1).max(600_000).default(5_000),
    /** Milliseconds from sending the request to the upstream's response headers → 504. */
    headers: z.int().min(1).max(3_600_000).default(30_000),
    /** Most milliseconds between two chunks of the upstream's response body (idle) → the response is cut. */
    body: z.int().min(1).max(3_600_000).default(30_000),
    /**
     * Most milliseconds a request waits for a free connection to its upstream → 503. HAProxy's
     * `timeout queue` falls back to its connect timeout; so does this default (5 s).
     */
    queue: z.int().min(1).max(600_000).default(5_000),
    /**
     * Most milliseconds a client may leave its answer unread while the gateway has more to send
     * (nginx's `send_timeout`) → its connection is closed and the upstream connection freed.
     * The default matches `body`: a silent client is cut as soon as a silent upstream is.
     */
    send: z.int().min(1).max(3_600_000).default(30_000),
  })
  .prefault({})

/** TLS towards https upstreams. */
const tls = z
  .strictObject({
    /** Trusted CA certificates (PEM), replacing Node's bundle; each must parse. */
    ca: pemCertificates.optional(),
    /** Client certificate (PEM) for mutual TLS, with `key`. */
    cert: pemCertificates.optional(),
    key: pemPrivateKey.optional(),
    /** SNI name and the name the certificate must carry (default: the upstream's host). */
    servername: z.string().min(1).optional(),
    /** `false` accepts any certificate — for tests only. */
    rejectUnauthorized: z.boolean().default(true),
  })
  .superRefine(checkCertificatePair)

/**
 * Retries (Envoy's retry policy with a retry budget): only idempotent methods or a
 * request with an `Idempotency-Key`, to another host when there is one, with
 * exponential backoff and full jitter, honouring `Retry-After`, never past
 * `deadline`. The budget caps retries in flight at `budget.percent` of the
 * requests in flight (at least `budget.minConcurrent`), so retries can never
 * multiply an outage.
 */
const retry = section(
  z.strictObject({
    /** Retries after the first attempt. */
    attempts: z.int().min(0).max(10).default(2),
    /** Upstream statuses worth another host (connection failures always are). */
    statuses: z.array(z.int().min(500).max(599)).default([502, 503, 504]),
    /** Backoff: the n-th retry waits a random time below min(max, base × 2ⁿ⁻¹) ms. */
    backoff: z
      .strictObject({
        base: z.int().min(0).max(60_000).default(25),
        max: z.int().min(0).max(600_000).default(250),
      })
      .prefault({}),
    budget: z
      .strictObject({
        /** Retries in flight, as a percentage of requests in flight. */
        percent: z.number().min(0).max(100).default(20),
        /** Retries in flight always allowed, however few requests there are. */
        minConcurrent: z.int().min(0).max(10_000).default(3),
      })
      .prefault({}),
    /** Request bodies up to this size are buffered so they can be sent again; larger ones are not retried. */
    maxBufferBytes: z
      .int()
      .min(0)
      .max(16 * 1024 * 1024)
      .default(64 * 1024),
    /** Milliseconds after the first attempt past which no retry starts (nor waits for `Retry-After`). */
    deadline: z.int().min(1).max(3_600_000).default(10_000),
  }),
)

const percent = z.number().min(0).max(100)

/**
 * Fault injection (Envoy's fault filter): a share of requests delayed, and a share
 * answered with an error status without reaching the upstream. Off by default;
 * `route.setChaos()` switches it at run time.
 */
export const chaosSchema = z.union([
  z.literal(false),
  z
    .strictObject({
      /** Delay `percent` of the requests by `ms` before forwarding them. */
      delay: z.strictObject({ percent, ms: z.int().min(1).max(600_000) }).optional(),
      /** Answer `percent` of the requests with `status` (problem+json) instead of forwarding them. */
      abort: z.strictObject({ percent, status: z.int().min(400).max(599).default(503) }).optional(),
    })
    .refine((c) => c.delay !== undefined || c.abort !== undefined, { message: 'give delay, abort or both' }),
])

/** One proxy route: what `shield.proxy(route)` and Fastify's `proxy: [route]` take. */
export const proxyRouteSchema = z
  .strictObject({
    /** Requests under this path go upstream (Express: the mount path is the prefix). */
    prefix: prefix.default('/'),
    /** The route's name in metrics and logs (default: its prefix). */
    name: z.string().min(1).max(100).optional(),
    /** Upstream base URLs (`http://10.0.0.5:8080`, `https://users.internal/v2`). */
    upstreams: z.array(upstream).max(1000).default([]),
    /**
     * Choose a target per request (a URL), checked on the address actually
     * connected: private, loopback, link-local and metadata addresses are refused
     * unless `allowTargets` lists them. `undefined` sends the request to `upstreams`.
     */
    router: fn<RouterFunction>('(req) => string | URL | undefined').optional(),
    /** Addresses and CIDRs a `router` target may reach even though they are internal. */
    allowTargets: z.array(addressOrCidr).max(10_000).default([]),
    /** DNS lookup for `router` targets (default `dns.lookup`): a custom resolver, or a stub in tests. */
    lookup: fn<LookupFunction>('(hostname, options, callback) => void').optional(),
    /**
     * What replaces the prefix upstream, after the upstream URL's own path. Default
     * `''`: the prefix is stripped. `/api/users` under prefix `/api` goes to
     * `/users`; with `rewritePrefix: '/v1'` to `/v1/users`; with upstream
     * `http://h/svc` to `/svc/users`.
     */
    rewritePrefix: z.union([z.literal(''), prefix]).default(''),
    /** `Host` towards the upstream: `upstream` (its URL's host, default), `preserve` (the client's), or a fixed name. */
    host: z
      .union([
        z.literal('upstream'),
        z.literal('preserve'),
        z.string().regex(/^[A-Za-z0-9.-]+(?::\d{1,5})?$/),
      ])
      .default('upstream'),
    timeouts,
    /** Largest request body forwarded, in bytes (overrides `validator.maxBodyBytes` on this route). */
    maxBodyBytes: z.int().min(0).optional(),
    /**
     * Protocols an `Upgrade` request may switch to through this route (RFC 9110 §7.8 tokens, compared
     * case-insensitively, any version); others are refused with 403. `[]`: no upgrade at all. Only
     * WebSocket by default: a tunnelled `h2c` would carry requests no guard sees.
     */
    upgrades: z
      .array(z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a protocol name such as websocket'))
      .max(20)
      .default(['websocket'])
      .transform((list) => list.map((t) => t.toLowerCase())),
    /** Forward request headers whose names contain `_` (dropped by default, as nginx does). */
    underscoreHeaders: z.boolean().default(false),
    /** The request-id header: propagated when the client sent a sane one, generated otherwise; `false`: neither. */
    requestId: z
      .union([z.literal(false), headerName.transform((h) => h.toLowerCase())])
      .default('x-request-id'),
    /** Most connections kept open to each upstream. */
    connections: z.int().min(1).max(10_000).default(128),
    /**
     * Most requests waiting for a connection to one upstream when all `connections` are busy;
     * more are answered 503 at once (Envoy's `max_pending_requests`, whose default this is).
     */
    maxPending: z.int().min(0).max(100_000).default(1024),
    /** Milliseconds an idle upstream connection is kept. */
    keepAlive: z.int().min(1).max(600_000).default(4_000),
    tls: tls.optional(),
    ...balancerFields,
    retry,
    chaos: chaosSchema.default(false),
    /** The ghost cache on this route, over the top-level `ghost` (`false`: never on this route). */
    ghost: routeGhostSchema,
  })
  .refine((r) => r.upstreams.length > 0 || r.router !== undefined, {
    message: 'give at least one upstream, or a router',
    path: ['upstreams'],
  })

/** What a proxy route accepts. */
export type ProxyRouteOptions = z.input<typeof proxyRouteSchema>
/** A parsed proxy route. */
export type ProxyRouteConfig = z.output<typeof proxyRouteSchema>

export type ChaosOptions = z.input<typeof chaosSchema>
/** Fault injection as parsed: `false` or `{ delay?, abort? }`. */
export type ChaosConfig = z.output<typeof chaosSchema>

/** The top-level `proxy` option: routes the Aegis middleware (or the Fastify plugin) forwards. */
export const proxySection = z.array(proxyRouteSchema).max(1000).default([])

/** The top-level `chaos` option: fault injection for every proxy route that sets none. */
export const chaosDefaultsSchema = chaosSchema.optional()

/** The top-level settings every proxy route inherits (DESIGN's `breaker` and `chaos` options). */
export interface RouteDefaults {
  readonly breaker?: unknown
  readonly chaos?: unknown
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * A proxy route as given, with the top-level `breaker` and `chaos` filled in
 * where the route sets none. A breaker object of the route is laid over the
 * top-level one (`{ breaker: { resetTimeout: 5000 } }` keeps the top-level
 * thresholds); `false` on the route turns it off there. Anything that is not a
 * route object is returned as is, for the schema to refuse.
 */
export function withRouteDefaults(route: unknown, defaults: RouteDefaults): unknown {
  if (!isObject(route)) return route
  const out = { ...route }
  const { breaker, chaos } = defaults
  if (breaker !== undefined) {
    if (route.breaker === undefined) out.breaker = breaker
    else if (isObject(route.breaker) && isObject(breaker)) out.breaker = { ...breaker, ...route.breaker }
  }
  if (chaos !== undefined && route.chaos === undefined) out.chaos = chaos
  return out
}
