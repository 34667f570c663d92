import { IncomingMessage } from 'node:http'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import {
  createAegis,
  pathOf,
  requestStateOf,
  templatize,
  type Aegis,
  type AegisOptions,
  type AegisRequestState,
  type HttpServer,
  type Limiter,
  type ProxyRoute,
  type ProxyRouteOptions,
  type Rejection,
  type RouteSchemas,
  REPROTOTYPING_IS_UNCACHED,
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

// Express re-prototypes every request, which leaves each request object with a
// hidden class of its own: every property added to one costs V8 a new map. So
// `req.aegis` is an accessor, defined once on the request prototype every
// Express app of this copy of Express inherits from (the object just above
// `IncomingMessage.prototype`), reading the state core keeps beside the request.
// It is not an own property: `Object.keys(req)` and `{ ...req }` leave it out.
const exposed = new WeakSet<object>()
function exposeState(req: Request): boolean {
  let proto = Object.getPrototypeOf(req) as object | null
  if (proto !== null && exposed.has(proto)) return true
  const first = proto
  while (proto !== null && Object.getPrototypeOf(proto) !== IncomingMessage.prototype)
    proto = Object.getPrototypeOf(proto) as object | null
  if (proto === null || first === null) return false // not an Express request
  if (!Object.hasOwn(proto, 'aegis'))
    Object.defineProperty(proto, 'aegis', {
      configurable: true,
      get(this: IncomingMessage) {
        return requestStateOf<AegisRequestState>(this)
      },
      set(this: IncomingMessage, value: unknown) {
        Object.defineProperty(this, 'aegis', { value, writable: true, configurable: true, enumerable: true })
      },
    })
  exposed.add(first)
  return true
}

// The path of the request target: cut from `req.url` in origin form (Express' `req.path` getter parses
// the URL again), parsed by Express in absolute form (`GET http://host/metrics`).
const pathOfTarget = (req: Request): string => (req.url.startsWith('/') ? pathOf(req.url) : req.path)

const send = (res: Response, r: Rejection): void => {
  res.status(r.status).set(r.headers).send(r.body)
}

// Express knows the route only after routing; read it when the response ends.
// `req.baseUrl` is the concrete mount path (a `/t/:tenant` mount gives `/t/acme`):
// template it like a raw path; core bounds the label set either way.
const routeOf = (req: Request): string | undefined =>
  req.route === undefined
    ? undefined
    : // After the final handler has run (an error), Express leaves `baseUrl` unset.
      `${req.baseUrl ? templatize(req.baseUrl) : ''}${(req.route as { path: string }).path}`

/**
 * Aegis for Express 5.
 *
 * @example
 * const shield = aegis()
 * app.use(shield)
 * app.get('/metrics', shield.metrics)
 * shield.attach(app.listen(3000))
 *
 * // Request shaping off (it is on by default on Node 20 and 22, attach() or not):
 * aegis({}, { shapeRequests: false })
 */
export function aegis(
  options?: AegisOptions,
  { shapeRequests: shapeServers = REPROTOTYPING_IS_UNCACHED }: ExpressAdapterOptions = {},
): AegisMiddleware {
  const core = createAegis(options, {
    routeOf: routeOf as (req: unknown) => string | undefined,
    stateBesideRequest: true,
    responseOf: (req) => (req as Request).res,
    // An app that never calls attach() is shaped from its server's first request (`req.socket.server`).
    shapeServers,
  })
  const metricsPath = core.config.metrics === false ? undefined : core.config.metrics.path

  /** Forward through a gateway route when it owns the request; otherwise on to the app. */
  const forward = (
    route: { handle: Aegis['gateway']['handle'] },
    req: Request,
    res: Response,
    next: NextFunction,
  ): void => {
    // What lies past the mount path, as sent: Express turns a bare `/api` into `/`.
    const rest = req.originalUrl.slice(req.baseUrl.length)
    const url = rest === '' || rest.startsWith('/') || rest.startsWith('?') ? rest : req.url
    const forwarded = route.handle(req, res, url, req.body)
    if (forwarded === false) return next()
    forwarded.catch(next)
  }

  /** Put the admitted state on the request and response; `false` when Aegis answered instead. */
  const accepted = (req: Request, res: Response, state: AegisRequestState): boolean => {
    if (!exposeState(req)) req.aegis = state
    core.applyHeaders(res, state)
    if (state.rejection === undefined) return true
    send(res, state.rejection)
    return false
  }

  const proceed = (req: Request, res: Response, next: NextFunction, state: AegisRequestState): void => {
    if (!accepted(req, res, state)) return
    if (metricsPath !== undefined && req.method === 'GET' && pathOfTarget(req) === metricsPath)
      return core.metricsHandler(req, res)
    if (core.gateway.routes.length > 0) return forward(core.gateway, req, res, next)
    next()
  }

  /** Admit a request inside a mount against its whole target; the guards read it synchronously. */
  const admitWhole = (req: Request): ReturnType<Aegis['admit']> => {
    const stripped = req.url
    req.url = req.originalUrl
    try {
      return core.admit(req)
    } finally {
      req.url = stripped
    }
  }

  /**
   * Admit once, however mounted, then `then(state)` unless Aegis answered. Guards see
   * the whole target (`req.originalUrl`), not what a mount path left of it: a policy
   * for `POST /api/login` matches whether Aegis runs at the root or inside
   * `app.use('/api', …)`.
   */
  const admitted = (
    req: Request,
    res: Response,
    next: NextFunction,
    then: (req: Request, res: Response, next: NextFunction, state: AegisRequestState) => void,
  ): void => {
    const admission = req.baseUrl === '' ? core.admit(req) : admitWhole(req)
    core.track(req, res)
    if (admission instanceof Promise)
      admission.then((state) => {
        try {
          then(req, res, next, state)
        } catch (err) {
          next(err)
        }
      }, next)
    else then(req, res, next, admission)
  }

  const middleware = function aegis(req: Request, res: Response, next: NextFunction): void {
    if (core.stateOf(req) !== undefined) return next() // admitted once, however mounted
    admitted(req, res, next, proceed)
  } as AegisMiddleware

  return Object.assign(middleware, {
    core,
    limiter: core.limiter,
    metrics: ((req, res) => core.metricsHandler(req, res)) as RequestHandler,
    validate(schemas: RouteSchemas): RequestHandler {
      const check = core.routeValidator(schemas)
      return function aegisValidate(req, res, next) {
        const result = check({ query: req.query, params: req.params, body: req.body as unknown })
        if (!result.ok) {
          core.countRejection(result.rejection)
          return send(res, result.rejection)
        }
        // Parsed values (coerced, defaulted) replace the raw ones. Express 5's
        // `req.query` is a getter on the prototype: shadow it on this request.
        if (schemas.body !== undefined) req.body = result.value.body
        if (schemas.params !== undefined) req.params = result.value.params as typeof req.params
        if (schemas.query !== undefined)
          Object.defineProperty(req, 'query', {
            value: result.value.query,
            configurable: true,
            enumerable: true,
            writable: true,
          })
        if (req.aegis !== undefined) req.aegis.input = result.value
        next()
      }
    },
    proxy(options: ProxyRouteOptions): ProxyMiddleware {
      // Upgrades never pass Express' router: only a route with its own prefix, read from the root, takes them.
      const route = core.proxy(options, { upgrades: options.prefix !== undefined })
      const afterAdmission = (
        req: Request,
        res: Response,
        next: NextFunction,
        state: AegisRequestState,
      ): void => {
        if (accepted(req, res, state)) forward(route, req, res, next)
      }
      const handler: RequestHandler = function aegisProxy(req, res, next) {
        if (core.stateOf(req) !== undefined) return forward(route, req, res, next)
        admitted(req, res, next, afterAdmission)
      }
      return Object.assign(handler, { route })
    },
    attach: (server: HttpServer, { shapeRequests = shapeServers }: AttachOptions = {}) =>
      core.attach(server, { shapeRequests }),
    close: () => core.close(),
  })
}

export default aegis
export type { AegisOptions, AegisRequestState } from '@aegis/core'
export { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '@aegis/core'
