import type { Context, Middleware, Next } from 'koa'
import {
  createAegis,
  type Aegis,
  type AegisOptions,
  type AegisRequestState,
  type HttpServer,
  type Limiter,
  type ProxyRoute,
  type ProxyRouteOptions,
  type Rejection,
  type RouteSchemas,
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

const send = (ctx: Context, r: Rejection): void => {
  ctx.status = r.status
  ctx.set(r.headers as Record<string, string>)
  ctx.body = r.body
}

const serveMetrics = async (core: Aegis, ctx: Context): Promise<void> => {
  const scraped = await core.scrapeMetrics()
  if (scraped === undefined) return
  ctx.status = scraped.status
  ctx.set('cache-control', 'no-store')
  ctx.type = scraped.contentType
  ctx.body = scraped.body
}

/** @koa/router records the matched template on the context. */
const recordRoute = (ctx: Context, state: AegisRequestState): void => {
  const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute
  if (typeof matched === 'string') state.route = matched
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
  const metricsPath = core.config.metrics === false ? undefined : core.config.metrics.path

  /** Put the admitted state on the context and response; `undefined` when Aegis answered instead. */
  const accept = (ctx: Context, state: AegisRequestState): AegisRequestState | undefined => {
    ctx.state.aegis = state
    core.applyHeaders(ctx.res, state)
    if (state.rejection === undefined) return state
    send(ctx, state.rejection)
    return undefined
  }

  /** Admit the request: synchronously, unless a shared store has to answer first. */
  const admit = (ctx: Context): AegisRequestState | undefined | Promise<AegisRequestState | undefined> => {
    const admitted = core.admit(ctx.req)
    core.track(ctx.req, ctx.res)
    return admitted instanceof Promise ? admitted.then((state) => accept(ctx, state)) : accept(ctx, admitted)
  }

  /** Forward through a gateway route that owns the request; `false` when none does. */
  const forward = async (route: Pick<ProxyRoute, 'handle'>, ctx: Context): Promise<boolean> => {
    const forwarded = route.handle(ctx.req, ctx.res, ctx.url, (ctx.request as { body?: unknown }).body)
    if (forwarded === false) return false
    ctx.respond = false // the gateway writes the response itself
    await forwarded
    return true
  }

  /**
   * The rest of the app. Promise callbacks rather than an async function with
   * try/finally: one allocation fewer on every request.
   */
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

  /** After admission: the metrics page, a gateway route, or the rest of the app. */
  const proceed = (ctx: Context, next: Next, state: AegisRequestState | undefined): Promise<void> => {
    if (state === undefined) return Promise.resolve()
    if (metricsPath !== undefined && ctx.path === metricsPath && ctx.method === 'GET')
      return serveMetrics(core, ctx)
    if (core.gateway.routes.length > 0)
      return forward(core.gateway, ctx).then((forwarded) =>
        forwarded ? undefined : downstream(ctx, next, state),
      )
    return downstream(ctx, next, state)
  }

  const middleware = function aegis(ctx: Context, next: Next): Promise<void> {
    try {
      if (core.stateOf(ctx.req) !== undefined) return next() // admitted once, however mounted
      const state = admit(ctx)
      return state instanceof Promise ? state.then((s) => proceed(ctx, next, s)) : proceed(ctx, next, state)
    } catch (err) {
      // A middleware's failure is a rejected promise with the value thrown, as from an async function.
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
      return Promise.reject(err)
    }
  } as AegisKoaMiddleware

  return Object.assign(middleware, {
    core,
    limiter: core.limiter,
    metrics: ((ctx: Context) => serveMetrics(core, ctx)) as Middleware,
    validate(schemas: RouteSchemas): Middleware {
      const check = core.routeValidator(schemas)
      return async function aegisValidate(ctx: Context, next: Next) {
        const c = ctx as Context & { params?: unknown; request: { body?: unknown } }
        const result = check({ query: ctx.query, params: c.params, body: c.request.body })
        if (!result.ok) {
          core.countRejection(result.rejection)
          return send(ctx, result.rejection)
        }
        // Parsed values replace the raw body and params; Koa's `ctx.query` setter
        // re-serialises, so the parsed query lives in `ctx.state.aegis.input` only.
        if (schemas.body !== undefined) c.request.body = result.value.body
        if (schemas.params !== undefined) c.params = result.value.params
        if (ctx.state.aegis !== undefined) ctx.state.aegis.input = result.value
        await next()
      }
    },
    proxy(options: ProxyRouteOptions): ProxyMiddleware {
      const route = core.proxy(options)
      const middleware: Middleware = async function aegisProxy(ctx: Context, next: Next) {
        if (core.stateOf(ctx.req) === undefined && (await admit(ctx)) === undefined) return
        if (!(await forward(route, ctx))) await next()
      }
      return Object.assign(middleware, { route })
    },
    attach: (server: HttpServer) => core.attach(server),
    close: () => core.close(),
  })
}

export default aegis
export type { AegisOptions, AegisRequestState } from '@aegis/core'
export { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '@aegis/core'
