/**
 * The admin API as an engine: its own listener (127.0.0.1:9901 unless told otherwise) and,
 * when `mount` says so, endpoints on the app. Every request meets the same checks in the
 * same order — `Host`, `Origin`, token, route, role, the anti-CSRF header for a change —
 * then one endpoint (endpoints.ts), which reads or changes an engine through its public API.
 * Every answer is JSON, every refusal problem+json with a code; every change succeeded is an
 * `admin.action` event, which the audit trail records.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Endpoint, Engine } from '../kernel/engine.js'
import { sameValue } from '../kernel/equal.js'
import type { EngineUpdate } from '../pipeline/engines.js'
import { ErrorCodes } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { allowedHosts, screen, tokenTable, type Actor } from './auth.js'
import { adminRoutes, API_VERSION, problemOf, type EndpointDeps } from './endpoints.js'
import { createFeed } from './feed.js'
import {
  AdminProblem,
  createRouter,
  readJson,
  sendJson,
  sendRejection,
  type AdminAnswer,
  type AdminRequest,
  type AdminRoute,
} from './http.js'
import { parseListen, type AdminConfig, type ListenAddress } from './options.js'

/** `aegis.admin`: where the API listens. */
export interface AdminApi {
  /** The listener's address once it listens; `undefined` before, without a listener, or if it failed. */
  address(): AddressInfo | undefined
  /** Settles once the listener listens (its address) or failed (`undefined`); never rejects. */
  readonly ready: Promise<AddressInfo | undefined>
  /** The endpoints, as `GET /v1` lists them. */
  readonly routes: readonly Pick<AdminRoute, 'method' | 'path' | 'role' | 'summary'>[]
}

export interface AdminDeps extends EndpointDeps {
  readonly logger: Logger | undefined
  /** Per-second counters for the live feed (metrics history), when there are. */
  readonly counters?: (() => unknown) | undefined
}

/** The admin engine as the table builds it: a reload with the same listener and mount point updates it in place. */
export interface AdminEngine extends Engine {
  readonly api: AdminApi
  /** New tokens, hosts, origins, anti-CSRF header and body limit; `undefined` when `listen` or `mount` changed. */
  reconfigure(config: AdminConfig): EngineUpdate | undefined
}

const PREFIX = '/v1'
const METHODS = ['GET', 'POST', 'PUT', 'DELETE'] as const

const refusals = {
  host: new AdminProblem(
    403,
    ErrorCodes.ADMIN_HOST,
    'Host not allowed',
    'the Host field names no address of the admin API (add the name to admin.hosts)',
  ),
  origin: new AdminProblem(
    403,
    ErrorCodes.ADMIN_ORIGIN,
    'Origin not allowed',
    'requests from pages of this origin are refused (add it to admin.origins)',
  ),
  token: new AdminProblem(
    401,
    ErrorCodes.ADMIN_TOKEN,
    'Unauthorized',
    'send a valid token: Authorization: Bearer <token>',
    { 'www-authenticate': 'Bearer realm="aegis-admin"' },
  ),
  role: new AdminProblem(403, ErrorCodes.ADMIN_ROLE, 'Forbidden', 'this token may read, not change'),
  notFound: new AdminProblem(404, ErrorCodes.NOT_FOUND, 'Not Found', 'no such endpoint (GET /v1 lists them)'),
  feedFull: new AdminProblem(
    503,
    ErrorCodes.ADMIN_BUSY,
    'Too many feed subscribers',
    'the live feed has as many subscribers as admin.maxFeedClients allows',
  ),
}

/** A sane `X-Request-Id` is kept; anything else is replaced. */
const requestIdOf = (req: IncomingMessage): string => {
  const id = req.headers['x-request-id']
  return typeof id === 'string' && /^[\w.:-]{1,128}$/.test(id) ? id : randomUUID()
}

/**
 * @example
 * const engine = adminEngine(config.admin, deps)
 * await engine.api.ready
 */
export function adminEngine(config: AdminConfig, deps: AdminDeps): AdminEngine {
  const listen: ListenAddress | undefined = config.listen === false ? undefined : parseListen(config.listen)
  // What a reload may change in place (reconfigure()).
  let settings = config
  let tokens = tokenTable(config)
  let hosts = allowedHosts(config, listen)
  let origins = new Set(config.origins)
  const feed = createFeed(deps.events, config.maxFeedClients, deps.counters)
  const routes: AdminRoute[] = [
    ...adminRoutes(deps),
    {
      method: 'GET',
      path: '/feed',
      role: 'read',
      summary:
        "Server-Sent Events: a batch a second of the bus' events and counters (?types=anomaly.*,upstream.breaker)",
      handle: ({ req, res, query }) => {
        if (!feed.open(req, res, query)) throw refusals.feedFull
        return undefined
      },
    },
  ]
  const index = routes.map(({ method, path, role, summary }) => ({
    method,
    path: PREFIX + path,
    role,
    summary,
  }))
  routes.push({
    method: 'GET',
    path: '',
    role: 'read',
    summary: 'this list',
    handle: () => ({ body: { version: API_VERSION, endpoints: index } }),
  })
  const router = createRouter(routes)

  /** An operator's change, one audit entry each (the trail listens for `admin.action`). */
  function audit(
    changing: { route: AdminRoute; actor: Actor; source: string },
    requestId: string,
    outcome: 'ok' | 'refused' | 'failed',
    what: AdminAnswer['audit'],
    error?: string,
  ): void {
    deps.events.emit('admin.action', {
      action: changing.route.action ?? `${changing.route.method} ${PREFIX}${changing.route.path}`,
      actor: changing.actor.name,
      role: changing.actor.role,
      source: changing.source,
      requestId,
      ...what,
      ...(outcome === 'ok' ? {} : { outcome }),
      ...(error === undefined ? {} : { error }),
    })
  }

  /** Serve one request whose path under the API's root is `path` (`/v1/status`). */
  async function serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const requestId = requestIdOf(req)
    const ids = { 'x-request-id': requestId }
    let changing: { route: AdminRoute; actor: Actor; source: string } | undefined
    try {
      const screened = screen(req, hosts, origins)
      if (screened !== undefined) throw refusals[screened]
      const actor: Actor | undefined = tokens.actorOf(req.headers.authorization)
      if (actor === undefined) throw refusals.token
      const q = path.indexOf('?')
      const pathname = q < 0 ? path : path.slice(0, q)
      const query = new URLSearchParams(q < 0 ? '' : path.slice(q + 1))
      if (pathname !== PREFIX && !pathname.startsWith(`${PREFIX}/`)) throw refusals.notFound
      const found = router.match(req.method ?? 'GET', pathname.slice(PREFIX.length))
      if (found === undefined) throw refusals.notFound
      if ('methods' in found)
        throw new AdminProblem(
          405,
          ErrorCodes.METHOD_NOT_ALLOWED,
          'Method Not Allowed',
          `this endpoint takes ${found.methods.join(', ')}`,
          { allow: found.methods.join(', ') },
        )
      const { route, params } = found
      if (route.role === 'admin' && actor.role !== 'admin') throw refusals.role
      // A change must carry the custom header: a form, an image or a plain link cannot.
      if (route.method !== 'GET' && req.headers[settings.csrfHeader] === undefined)
        throw new AdminProblem(
          403,
          ErrorCodes.ADMIN_CSRF,
          'Missing anti-CSRF header',
          `a change must carry the ${settings.csrfHeader} header (any value)`,
        )
      const request: AdminRequest = {
        req,
        res,
        params,
        query,
        actor,
        requestId,
        source: req.socket.remoteAddress ?? '',
        json: () => readJson(req, settings.maxBodyBytes),
      }
      changing = route.method === 'GET' ? undefined : { route, actor, source: request.source }
      const answer = await route.handle(request)
      if (answer === undefined) return // it wrote the answer itself (the feed)
      const status = answer.status ?? 200
      sendJson(res, status, answer.body, { ...ids, ...answer.headers })
      if (changing !== undefined) audit(changing, requestId, 'ok', answer.audit)
    } catch (err) {
      try {
        const p = problemOf(err)
        if (p.rejection.status === 500)
          deps.logger?.error({ err, requestId }, 'admin API: an endpoint failed')
        // A change that was allowed but refused or failed is worth its audit entry too.
        if (changing !== undefined)
          audit(changing, requestId, p.rejection.status >= 500 ? 'failed' : 'refused', undefined, p.message)
        // An unread body would stall a keep-alive connection.
        if (!req.complete) req.resume()
        sendRejection(res, p.rejection, ids)
      } catch {
        // Nothing can be answered any more: the connection goes, the process stays.
        res.destroy()
      }
    }
  }

  let server: Server | undefined
  let resolveReady: (a: AddressInfo | undefined) => void = () => {}
  const ready = new Promise<AddressInfo | undefined>((resolve) => (resolveReady = resolve))
  if (listen === undefined) resolveReady(undefined)
  else {
    server = createServer(
      { requestTimeout: 30_000, headersTimeout: 10_000, maxHeaderSize: 16_384 },
      (req, res) => void serve(req, res, req.url ?? '/'),
    )
    server.keepAliveTimeout = 5_000
    server.on('clientError', (_err, socket) => socket.destroy())
    server.once('error', (err) => {
      deps.logger?.error({ err, listen: config.listen }, 'admin API: cannot listen')
      resolveReady(undefined)
    })
    server.listen(listen.port, listen.host, () => {
      const address = server?.address() as AddressInfo
      deps.logger?.info({ address: address.address, port: address.port }, 'admin API listening')
      resolveReady(address)
    })
    server.unref()
  }

  // Mounted on the app: one endpoint per method, taking every path under the mount point.
  const mount = config.mount
  const endpoints: Endpoint[] =
    mount === undefined
      ? []
      : METHODS.map((method) => ({
          method,
          path: mount,
          prefix: true,
          handle: (req: IncomingMessage, res: ServerResponse) => {
            const url = req.url ?? '/'
            return serve(req, res, url.startsWith(mount) ? url.slice(mount.length) || '/' : url)
          },
        }))

  return {
    name: 'admin',
    endpoints,
    reconfigure(next) {
      if (!sameValue(next.listen, config.listen) || next.mount !== config.mount) return undefined
      const table = tokenTable(next)
      const allowed = allowedHosts(next, listen)
      return {
        commit: () => {
          settings = next
          tokens = table
          hosts = allowed
          origins = new Set(next.origins)
          return undefined
        },
        abort: async () => {},
      }
    },
    api: {
      address: () => {
        const a = server?.listening === true ? server.address() : null
        return a === null || typeof a === 'string' ? undefined : a
      },
      ready,
      routes: index,
    },
    close: () =>
      new Promise<void>((resolve) => {
        feed.close()
        if (server === undefined || !server.listening) {
          resolveReady(undefined)
          resolve()
          return
        }
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
