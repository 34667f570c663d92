import type { RequestHandler } from 'express'
import type {
  Aegis,
  AegisRequestState,
  HttpServer,
  Limiter,
  ProxyRoute,
  ProxyRouteOptions,
  RouteSchemas,
} from '@aegis/core'

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Aegis' state for this request: client identity, validated input. */
      aegis?: AegisRequestState
    }
  }
}

/** A gateway route as Express middleware; `route` switches chaos, emits upstream events. */
export interface ProxyMiddleware extends RequestHandler {
  readonly route: ProxyRoute
}

/** Options of `shield.attach(server)`. */
export interface AttachOptions {
  /**
   * Add the properties Express sets on each request and response (`next`,
   * `baseUrl`, `params`, `res.locals`, …: learned from the first responses)
   * before Express re-prototypes them, so that V8 keeps one cached layout for
   * every request instead of making new ones per request. Each holds what
   * reading it gives anyway until Express sets it; only `Object.hasOwn(req,
   * 'next')` and the like see them earlier. Default: `aegis()`'s own
   * `shapeRequests` ({@link ExpressAdapterOptions}): on where V8 needs it
   * (Node 20 and 22; Node 24's V8 keeps Express' layouts by itself).
   * docs/performance.md has the figures.
   */
  shapeRequests?: boolean
}

/** Options of the Express adapter itself (`aegis(options, adapterOptions)`), beside core's options. */
export interface ExpressAdapterOptions {
  /**
   * Shape the requests of every server the middleware serves (see
   * {@link AttachOptions}), from its first request on, whether or not
   * `shield.attach(server)` is called. `false` turns it off here and is the
   * default of `attach()`'s own `shapeRequests`. Default: on where V8 needs it
   * (Node 20 and 22).
   */
  shapeRequests?: boolean
}

/** The Express middleware, with the instance's other entry points on it. */
export interface AegisMiddleware extends RequestHandler {
  /** The core instance. */
  readonly core: Aegis
  /** Serves the Prometheus text format: `app.get('/metrics', shield.metrics)`. */
  readonly metrics: RequestHandler
  /** Per-route zod validation, placed after the body parser. */
  validate(schemas: RouteSchemas): RequestHandler
  /** The rate limiter: `penalty(req, points)`, `reward`, `get(key)`, `reset(key)`. */
  readonly limiter: Limiter | undefined
  /**
   * A gateway route: forwards what reaches it to its upstreams. The mount path is
   * the prefix: `app.use('/api', shield.proxy({ upstreams: ['http://127.0.0.1:8081'] }))`.
   * Requests are admitted once, whether `shield` runs before it or not. WebSocket
   * upgrades never pass Express' router: a route takes them when it names its
   * `prefix` and is mounted at the root (`app.use(shield.proxy({ prefix: '/ws', … }))`).
   */
  proxy(options: ProxyRouteOptions): ProxyMiddleware
  /**
   * Warn about missing server timeouts, answer parser errors, drain on close;
   * and give the server's requests a stable layout (see {@link AttachOptions};
   * without `attach()` the middleware shapes from the first request it sees).
   */
  attach(server: HttpServer, options?: AttachOptions): void
  close(): Promise<void>
}
