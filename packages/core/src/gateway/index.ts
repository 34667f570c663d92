/**
 * The gateway: proxy routes that forward requests to pools of upstreams.
 * Works on Node's IncomingMessage / ServerResponse, so the three adapters share
 * it; each upstream of each route has its own undici keep-alive pool.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Pool } from 'undici'
import { SmoothWeightedRoundRobin } from '../balancer/swrr.js'
import { pathTraversal } from '../validator/index.js'
import { inspectPath } from '../validator/path.js'
import { bodyTooLarge, writeRawRejection } from '../validator/body-limit.js'
import type { Rejection } from '../pipeline/types.js'
import { bodyConsumed, noUpstream, upstreamFailure } from './answers.js'
import { exchange } from './forward.js'
import { upstreamRequestHeaders } from './headers.js'
import type { ProxyRouteConfig } from './options.js'

export { proxyRouteSchema, proxySection } from './options.js'
export type { ProxyRouteOptions, ProxyRouteConfig } from './options.js'
export {
  parseUpstreamUrl,
  refusedTargetAddress,
  refusedUpstreamAddress,
  hostAddress,
} from './upstream-url.js'

/** What the gateway needs from the pipeline. */
export interface GatewayDeps {
  /** Whether the socket peer is a trusted proxy (its forwarding headers are kept). */
  peerTrusted(req: IncomingMessage): boolean
  /** Raise the body limit of an admitted request to the route's `maxBodyBytes`. */
  setBodyLimit(req: IncomingMessage, bytes: number): void
  /** Count a rejection the gateway answered. */
  countRejection(rejection: Rejection): void
}

/** One upstream of a route. */
class Upstream {
  readonly origin: string
  /** The URL's path without its trailing slash (`''` for `/`). */
  readonly basePath: string
  readonly host: string
  readonly pool: Pool
  effectiveWeight: number

  constructor(
    readonly url: URL,
    readonly weight: number,
    route: ProxyRouteConfig,
  ) {
    this.origin = url.origin
    this.basePath = url.pathname.replace(/\/+$/, '')
    this.host = url.host
    this.effectiveWeight = weight
    this.pool = new Pool(url.origin, {
      connections: route.connections,
      keepAliveTimeout: route.keepAlive,
      pipelining: 1,
      connect: {
        timeout: route.timeouts.connect,
        ...(url.protocol === 'https:' && route.tls !== undefined ? route.tls : {}),
      },
    })
  }
}

/** A parsed body an app's body parser left on the request (`req.body`, `ctx.request.body`). */
export type ParsedBody = unknown

/** One proxy route, ready to forward. */
export interface ProxyRoute {
  readonly config: ProxyRouteConfig
  /**
   * Forward `req` when `url` (the request target as seen where the route is
   * mounted) lies under the route's prefix: resolves once the response is
   * over. `false` when it does not (the caller goes on to the app).
   */
  handle(req: IncomingMessage, res: ServerResponse, url: string, parsed?: ParsedBody): Promise<void> | false
  close(): Promise<void>
}

/** The part of `url` under `prefix` (`''`, `/…` or `?…`), or `undefined` when `url` is elsewhere. */
export function underPrefix(prefix: string, url: string): string | undefined {
  // `''` and `?…`: the bare mount path of an Express mount (`/api` under `app.use('/api', …)`).
  if (prefix === '/') return url === '' || url.startsWith('/') || url.startsWith('?') ? url : undefined
  if (!url.startsWith(prefix)) return undefined
  const next = url.charCodeAt(prefix.length)
  // Only at a segment boundary: `/api` owns `/api/x` and `/api?q`, not `/apix`.
  if (Number.isNaN(next) || next === 0x2f || next === 0x3f) return url.slice(prefix.length)
  return undefined
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i
const FORM_TYPE = /^application\/x-www-form-urlencoded\b/i

/**
 * A body a parser already read, serialised again the way it came: bytes and
 * text as they are, JSON as JSON, flat forms as forms. `undefined` when it
 * cannot be (nothing parsed, or a shape its content type cannot carry).
 */
export function reserialize(parsed: ParsedBody, contentType: string | undefined): Buffer | undefined {
  if (Buffer.isBuffer(parsed)) return parsed
  if (parsed instanceof Uint8Array) return Buffer.from(parsed.buffer, parsed.byteOffset, parsed.byteLength)
  if (typeof parsed === 'string') return Buffer.from(parsed)
  if (typeof parsed !== 'object' || parsed === null) return undefined
  const type = contentType ?? ''
  if (JSON_TYPE.test(type)) return Buffer.from(JSON.stringify(parsed))
  if (FORM_TYPE.test(type)) {
    const form = new URLSearchParams()
    for (const [k, v] of Object.entries(parsed)) {
      if (typeof v === 'string') form.append(k, v)
      else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) for (const x of v) form.append(k, x)
      else return undefined
    }
    return Buffer.from(form.toString())
  }
  return undefined
}

interface Body {
  readonly body: IncomingMessage | Buffer | null
  readonly contentLength: number | undefined
}

/** What to send upstream as the body: the request stream, a re-serialised parsed body, or nothing. */
function bodyOf(req: IncomingMessage, parsed: ParsedBody): Body | undefined {
  const cl = req.headers['content-length']
  const chunked = req.headers['transfer-encoding'] !== undefined
  if (!chunked && (cl === undefined || cl === '0'))
    return { body: null, contentLength: cl === '0' ? 0 : undefined }
  if (!req.readableDidRead && !req.readableEnded)
    return { body: req, contentLength: chunked ? undefined : Number(cl) }
  const again = reserialize(parsed, req.headers['content-type'])
  return again === undefined ? undefined : { body: again, contentLength: again.length }
}

/**
 * Build a proxy route.
 *
 * @example
 * const route = createProxyRoute(proxyRouteSchema.parse({ prefix: '/api', upstreams: ['http://127.0.0.1:8081'] }), deps)
 * if (route.handle(req, res, req.url) === false) next()
 */
export function createProxyRoute(config: ProxyRouteConfig, deps: GatewayDeps): ProxyRoute {
  const upstreams = config.upstreams.map((u) => new Upstream(new URL(u.url), u.weight, config))
  const balancer = new SmoothWeightedRoundRobin(upstreams)
  const anyHost = (): boolean => true
  const { timeouts } = config
  function answer(req: IncomingMessage, res: ServerResponse, r: Rejection): void {
    deps.countRejection(r)
    writeRawRejection(res, r)
    // An unread upload would stall the connection: let it drain into nothing.
    if (!req.readableEnded) req.resume()
  }

  async function forward(req: IncomingMessage, res: ServerResponse, rest: string, parsed: ParsedBody) {
    if (config.maxBodyBytes !== undefined) {
      const cl = Number(req.headers['content-length'] ?? 0)
      if (cl > config.maxBodyBytes) return answer(req, res, bodyTooLarge(config.maxBodyBytes))
      deps.setBodyLimit(req, config.maxBodyBytes)
    }
    const body = bodyOf(req, parsed)
    if (body === undefined) return answer(req, res, bodyConsumed)
    const up = balancer.pick(anyHost)
    if (up === undefined) return answer(req, res, noUpstream(1))
    let path = `${up.basePath}${config.rewritePrefix}${rest}`
    if (!path.startsWith('/')) path = `/${path}`
    const { headers, requestId } = upstreamRequestHeaders(req, {
      peer: req.socket.remoteAddress ?? '',
      peerTrusted: deps.peerTrusted(req),
      host:
        config.host === 'upstream'
          ? up.host
          : config.host === 'preserve'
            ? (req.headers.host ?? up.host)
            : config.host,
      underscores: config.underscoreHeaders,
      requestId: config.requestId,
      contentLength: body.contentLength,
    })
    const outcome = await exchange(res, {
      dispatcher: up.pool,
      origin: up.origin,
      path,
      method: req.method ?? 'GET',
      headers,
      body: body.body,
      headersTimeout: timeouts.headers,
      bodyTimeout: timeouts.body,
      requestId:
        config.requestId === false || requestId === undefined
          ? undefined
          : { name: config.requestId, value: requestId },
    })
    if (outcome.responded || outcome.clientAborted) return
    answer(req, res, upstreamFailure(outcome.error))
  }

  return {
    config,
    handle(req, res, url, parsed) {
      const rest = underPrefix(config.prefix, url)
      if (rest === undefined) return false
      // The prefix must stay the floor: no dot-dot segment in any decoding may climb out of it.
      const q = rest.indexOf('?')
      if (inspectPath(q < 0 ? rest : rest.slice(0, q)) !== 'ok') {
        answer(req, res, pathTraversal)
        return Promise.resolve()
      }
      return forward(req, res, rest, parsed)
    },
    async close() {
      await Promise.all(upstreams.map((u) => u.pool.close()))
    },
  }
}

/** Several proxy routes; the longest matching prefix wins. */
export interface Gateway {
  readonly routes: readonly ProxyRoute[]
  /** Forward through the route owning `url`, or `false` when none does. */
  handle(req: IncomingMessage, res: ServerResponse, url: string, parsed?: ParsedBody): Promise<void> | false
  close(): Promise<void>
}

export function createGateway(configs: readonly ProxyRouteConfig[], deps: GatewayDeps): Gateway {
  const routes = configs
    .map((c) => createProxyRoute(c, deps))
    .sort((a, b) => b.config.prefix.length - a.config.prefix.length)
  return {
    routes,
    handle(req, res, url, parsed) {
      for (const route of routes) {
        const handled = route.handle(req, res, url, parsed)
        if (handled !== false) return handled
      }
      return false
    },
    async close() {
      await Promise.all(routes.map((r) => r.close()))
    },
  }
}
