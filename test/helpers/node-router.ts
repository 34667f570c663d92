/**
 * A router small enough to read in one go, for the conformance suite's plain
 * `node:http` app: no framework, so nothing between the request and the handler
 * but what `aegis.handler(app)` itself does.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

/** What a route's handler gets besides the request and response. */
export interface Matched {
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  /** The pattern that matched (`/users/:id`): the route template for metrics. */
  readonly route: string
}

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, matched: Matched) => unknown

interface Route {
  readonly method: string
  readonly pattern: string
  readonly segments: readonly string[]
  readonly handle: RouteHandler
}

/** Send `value` as JSON with `status`. */
export const sendJson = (res: ServerResponse, status: number, value: unknown): void => {
  const body = JSON.stringify(value)
  res.statusCode = status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(body))
  res.end(body)
}

/** Send `text` as plain text with `status`. */
export const sendText = (res: ServerResponse, status: number, text: string): void => {
  res.statusCode = status
  res.setHeader('content-type', 'text/plain; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(text))
  res.end(text)
}

/**
 * The path and query of an origin-form or absolute-form target (RFC 9112 §3.2).
 * By hand, not `new URL()`: WHATWG URL refuses authorities RFC 3986 allows
 * (IPvFuture literals), and an authority never holds a `/`.
 */
const splitTarget = (url: string): { path: string; query: URLSearchParams } => {
  // The path starts at the first `/` after the authority (absolute form), or at once.
  const scheme = url.charCodeAt(0) === 0x2f ? -1 : url.indexOf('://')
  const authority = scheme < 0 ? 0 : scheme + 3
  let end = authority
  while (end < url.length && url[end] !== '/' && url[end] !== '?') end++
  const start = scheme < 0 ? 0 : end
  const q = url.indexOf('?', start)
  const path = q < 0 ? url.slice(start) : url.slice(start, q)
  return { path: path === '' ? '/' : path, query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)) }
}

/**
 * A request listener dispatching on method and path pattern (`:name` segments
 * capture). HEAD is served by the GET route (Node drops the body itself).
 * `onMatch` runs before the handler (the app records the route template there);
 * nothing matched: `notFound`.
 *
 * @example
 * const router = createRouter()
 * router.add('GET', '/users/:id', (req, res, { params }) => sendJson(res, 200, params))
 * http.createServer(router.listener)
 */
export function createRouter(
  options: {
    onMatch?: (req: IncomingMessage, route: string) => void
    notFound?: (req: IncomingMessage, res: ServerResponse) => void
  } = {},
): {
  add(method: string, pattern: string, handle: RouteHandler): void
  readonly listener: (req: IncomingMessage, res: ServerResponse) => unknown
} {
  const routes: Route[] = []
  const notFound = options.notFound ?? ((_req, res) => sendJson(res, 404, { error: 'not found' }))
  const match = (route: Route, path: string): Record<string, string> | undefined => {
    const parts = path.split('/')
    if (parts.length !== route.segments.length) return undefined
    const params: Record<string, string> = {}
    for (let i = 0; i < parts.length; i++) {
      const want = route.segments[i] as string
      const got = parts[i] as string
      if (want.startsWith(':')) {
        if (got === '') return undefined
        try {
          params[want.slice(1)] = decodeURIComponent(got)
        } catch {
          return undefined
        }
      } else if (want !== got) return undefined
    }
    return params
  }
  return {
    add(method, pattern, handle) {
      routes.push({ method, pattern, segments: pattern.split('/'), handle })
    },
    listener(req, res) {
      const target = splitTarget(req.url ?? '/')
      const method = req.method === 'HEAD' ? 'GET' : req.method
      for (const route of routes) {
        if (route.method !== method) continue
        const params = match(route, target.path)
        if (params === undefined) continue
        options.onMatch?.(req, route.pattern)
        return route.handle(req, res, { params, query: target.query, route: route.pattern })
      }
      return notFound(req, res)
    },
  }
}
