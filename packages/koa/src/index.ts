import type { Context, Middleware, Next } from 'koa'
import {
  createAegis,
  type AegisOptions,
  type AegisRequestState,
  type Dispatched,
  type Forwarder,
  type HttpServer,
  type ProxyRouteOptions,
  type Rejection,
  type RouteSchemas,
} from '@aegis/core'
import type { AegisKoaMiddleware, ProxyMiddleware } from './types.js'

export type { AegisKoaMiddleware, ProxyMiddleware } from './types.js'

/** Stay inside Koa's response handling. */
const send = (ctx: Context, r: Rejection | { status: number; headers: object; body: string }): void => {
  ctx.status = r.status
  ctx.set(r.headers as Record<string, string>)
  ctx.body = r.body
}

/** The rest of the app; then the route @koa/router matched, and our fields on a thrown error. */
const downstream = (ctx: Context, next: Next, state: AegisRequestState): Promise<void> =>
  next().then(
    () => recordRoute(ctx, state),
    (err: unknown) => {
      recordRoute(ctx, state)
      // Koa's onerror removes all headers, then sets `err.headers`: carry ours there.
      if (typeof err === 'object' && err !== null && Object.isExtensible(err)) {
        const e = err as { headers?: Record<string, string> }
        e.headers = { ...Object.fromEntries(state.headers), ...e.headers }
      }
      throw err
    },
  )
const recordRoute = (ctx: Context, state: AegisRequestState): void => {
  const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute
  if (typeof matched === 'string') state.route = matched
}

function settle(ctx: Context, next: Next, done: Dispatched): Promise<void> | undefined {
  if (done === undefined) return void (ctx.respond = false) // Aegis wrote the response itself
  ctx.state.aegis = done
  if (done.rejection === undefined) return downstream(ctx, next, done)
  send(ctx, done.rejection)
}

/**
 * Aegis for Koa 3. Security headers survive errors thrown by handlers (Koa
 * drops every header on error unless the error carries them).
 *
 * @example
 * const shield = aegis({ metrics: { path: '/metrics' } })
 * app.use(shield)
 * shield.attach(app.listen(3000))
 */
export function aegis(options?: AegisOptions): AegisKoaMiddleware {
  const core = createAegis(options)
  // Promise callbacks rather than an async function: no extra tick, one allocation fewer on every request.
  const dispatcher = (via?: Forwarder): Middleware =>
    function aegis(ctx: Context, next: Next) {
      const done = core.dispatch(ctx.req, ctx.res, ctx.url, (ctx.request as { body?: unknown }).body, via)
      return done instanceof Promise ? done.then((d) => settle(ctx, next, d)) : settle(ctx, next, done)
    }
  const middleware = Object.assign(dispatcher(), {
    core,
    metrics: (async (ctx: Context) => {
      const scraped = await core.scrapeMetrics()
      if (scraped !== undefined)
        send(ctx, {
          ...scraped,
          headers: { 'content-type': scraped.contentType, 'cache-control': 'no-store' },
        })
    }) as Middleware,
    validate(schemas: RouteSchemas): Middleware {
      const check = core.routeValidator(schemas)
      return async function aegisValidate(ctx: Context, next: Next) {
        const c = ctx as Context & { params?: unknown; request: { body?: unknown } }
        const result = check({ query: ctx.query, params: c.params, body: c.request.body })
        if (!result.ok) {
          core.countRejection(result.rejection)
          return send(ctx, result.rejection)
        }
        // Koa's `ctx.query` setter re-serialises: the parsed query lives in `ctx.state.aegis.input` only.
        if (schemas.body !== undefined) c.request.body = result.value.body
        if (schemas.params !== undefined) c.params = result.value.params
        if (ctx.state.aegis !== undefined) ctx.state.aegis.input = result.value
        await next()
      }
    },
    proxy(options: ProxyRouteOptions): ProxyMiddleware {
      const route = core.proxy(options)
      return Object.assign(dispatcher(route), { route })
    },
    attach: (server: HttpServer) => core.attach(server),
    close: () => core.close(),
  })
  // The limiter in force: a reload may build a new one.
  return Object.defineProperty(middleware, 'limiter', {
    get: () => core.limiter,
    enumerable: true,
  }) as typeof middleware & {
    readonly limiter: typeof core.limiter
  }
}

export default aegis
export type { AegisOptions, AegisRequestState } from '@aegis/core'
export { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '@aegis/core'
