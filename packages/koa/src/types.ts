import type { Middleware } from 'koa'
import type {
  Aegis,
  AegisRequestState,
  HttpServer,
  Limiter,
  ProxyRoute,
  ProxyRouteOptions,
  RouteSchemas,
} from '@aegis/core'

declare module 'koa' {
  interface DefaultState {
    /** Aegis' state for this request: client identity, validated input. */
    aegis?: AegisRequestState
  }
}

/** A gateway route as Koa middleware; `route` switches chaos, emits upstream events. */
export interface ProxyMiddleware extends Middleware {
  readonly route: ProxyRoute
}

/** The Koa middleware, with the instance's other entry points on it. */
export interface AegisKoaMiddleware extends Middleware {
  readonly core: Aegis
  /** Serves the Prometheus text format as a Koa middleware. */
  readonly metrics: Middleware
  /** The rate limiter: `penalty(req, points)`, `reward`, `get(key)`, `reset(key)`. */
  readonly limiter: Limiter | undefined
  /** Per-route zod validation, placed after the body parser and router. */
  validate(schemas: RouteSchemas): Middleware
  /**
   * A gateway route: `app.use(shield.proxy({ prefix: '/api', upstreams: [...] }))`
   * forwards what lies under `prefix` and passes everything else on.
   */
  proxy(options: ProxyRouteOptions): ProxyMiddleware
  attach(server: HttpServer): void
  close(): Promise<void>
}
