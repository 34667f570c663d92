import { z } from 'zod'
import { headerName } from '../options/shared.js'
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

/** A PEM string or buffer (or a list of them), as Node's TLS options take. */
const pem = z.union([z.string(), z.instanceof(Buffer), z.array(z.union([z.string(), z.instanceof(Buffer)]))])

const timeouts = z
  .strictObject({
    /** Milliseconds to open a connection (TCP and TLS) to an upstream → 504. */
    connect: z.int().min(1).max(600_000).default(5_000),
    /** Milliseconds from sending the request to the upstream's response headers → 504. */
    headers: z.int().min(1).max(3_600_000).default(30_000),
    /** Most milliseconds between two chunks of the upstream's response body (idle) → the response is cut. */
    body: z.int().min(1).max(3_600_000).default(30_000),
  })
  .prefault({})

/** TLS towards https upstreams. */
const tls = z.strictObject({
  /** Trusted CA certificates (PEM), replacing Node's bundle. */
  ca: pem.optional(),
  /** Client certificate (PEM) for mutual TLS, with `key`. */
  cert: pem.optional(),
  key: pem.optional(),
  /** SNI name and the name the certificate must carry (default: the upstream's host). */
  servername: z.string().min(1).optional(),
  /** `false` accepts any certificate — for tests only. */
  rejectUnauthorized: z.boolean().default(true),
})

/** One proxy route: what `shield.proxy(route)` and Fastify's `proxy: [route]` take. */
export const proxyRouteSchema = z
  .strictObject({
    /** Requests under this path go upstream (Express: the mount path is the prefix). */
    prefix: prefix.default('/'),
    /** Upstream base URLs (`http://10.0.0.5:8080`, `https://users.internal/v2`). */
    upstreams: z.array(upstream).min(1).max(1000),
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
    /** Forward request headers whose names contain `_` (dropped by default, as nginx does). */
    underscoreHeaders: z.boolean().default(false),
    /** The request-id header: propagated when the client sent a sane one, generated otherwise; `false`: neither. */
    requestId: z
      .union([z.literal(false), headerName.transform((h) => h.toLowerCase())])
      .default('x-request-id'),
    /** Most connections kept open to each upstream. */
    connections: z.int().min(1).max(10_000).default(128),
    /** Milliseconds an idle upstream connection is kept. */
    keepAlive: z.int().min(1).max(600_000).default(4_000),
    tls: tls.optional(),
  })
  .refine((r) => r.tls === undefined || (r.tls.cert === undefined) === (r.tls.key === undefined), {
    message: 'tls.cert and tls.key go together',
    path: ['tls'],
  })

/** What a proxy route accepts. */
export type ProxyRouteOptions = z.input<typeof proxyRouteSchema>
/** A parsed proxy route. */
export type ProxyRouteConfig = z.output<typeof proxyRouteSchema>

/** The top-level `proxy` option: routes the Aegis middleware (or the Fastify plugin) forwards. */
export const proxySection = z.array(proxyRouteSchema).max(1000).default([])
