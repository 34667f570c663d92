import type { NextFunction, Request, RequestHandler, Response } from 'express'
import {
  createAegis,
  templatize,
  type AegisOptions,
  type Dispatched,
  type RouteSchemas,
  REPROTOTYPING_IS_UNCACHED,
} from '@aegis/core'
import { exposeState } from './state.js'
import { send, validator } from './validate.js'
import type { AegisMiddleware, AttachOptions, ExpressAdapterOptions, ProxyMiddleware } from './types.js'

export type { AegisMiddleware, AttachOptions, ExpressAdapterOptions, ProxyMiddleware } from './types.js'

/** The route template, once Express has routed (`req.baseUrl` is the concrete mount path: template it). */
const routeOf = (req: Request): string | undefined =>
  req.route === undefined
    ? undefined
    : `${req.baseUrl ? templatize(req.baseUrl) : ''}${(req.route as { path: string }).path}`

/** What lies past the mount path, as sent (Express turns a bare `/api` into `/`); `undefined`: `req.url`. */
function targetOf(req: Request): string | undefined {
  if (req.baseUrl === '' && req.url === req.originalUrl) return undefined
  const rest = req.originalUrl.slice(req.baseUrl.length)
  return rest === '' || rest.startsWith('/') || rest.startsWith('?') ? rest : req.url
}

function settle(req: Request, res: Response, next: NextFunction, done: Dispatched): void {
  if (done === undefined) return // answered by Aegis
  if (!exposeState(req)) req.aegis = done
  if (done.rejection === undefined) next()
  else send(res, done.rejection)
}

/**
 * Aegis for Express 5.
 *
 * @example
 * const shield = aegis()
 * app.use(shield)
 * app.get('/metrics', shield.metrics)
 * shield.attach(app.listen(3000))
 */
export function aegis(
  options?: AegisOptions,
  { shapeRequests: shapeServers = REPROTOTYPING_IS_UNCACHED }: ExpressAdapterOptions = {},
): AegisMiddleware {
  const core = createAegis(options, {
    routeOf: routeOf as (req: unknown) => string | undefined,
    stateBesideRequest: true,
    responseOf: (req) => (req as Request).res,
    shapeServers,
    // Guards see the whole target, however mounted: a policy for `POST /api/login` matches inside `app.use('/api', …)`.
    wholeTarget: (req) => ((req as Request).baseUrl ? (req as Request).originalUrl : undefined),
  })
  const dispatcher = (via?: ProxyMiddleware['route']): RequestHandler =>
    function aegis(req, res, next) {
      const done = core.dispatch(req, res, targetOf(req), req.body, via)
      if (done instanceof Promise) done.then((d) => settle(req, res, next, d), next)
      else settle(req, res, next, done)
    }
  const middleware = Object.assign(dispatcher(), {
    core,
    metrics: ((req, res) => core.metricsHandler(req, res)) as RequestHandler,
    validate: (schemas: RouteSchemas) => validator(core, schemas),
    proxy(options: Parameters<AegisMiddleware['proxy']>[0]): ProxyMiddleware {
      // Upgrades never pass Express' router: only a route with its own prefix, read from the root, takes them.
      const route = core.proxy(options, { upgrades: options.prefix !== undefined })
      return Object.assign(dispatcher(route), { route })
    },
    attach: (
      server: Parameters<AegisMiddleware['attach']>[0],
      { shapeRequests = shapeServers }: AttachOptions = {},
    ) => core.attach(server, { shapeRequests }),
    close: () => core.close(),
  })
  // The limiter in force: a reload may build a new one.
  return Object.defineProperty(middleware, 'limiter', {
    get: () => core.limiter,
    enumerable: true,
  }) as AegisMiddleware
}

export default aegis
export type { AegisOptions, AegisRequestState } from '@aegis/core'
export { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '@aegis/core'
