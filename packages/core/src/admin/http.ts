/**
 * The admin API's HTTP plumbing: a route table with `:param` segments, answers as JSON,
 * errors as problem+json with a code, and request bodies read to a bound.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { AegisError, ErrorCodes, type ErrorCode } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'
import type { AdminAction } from '../audit/events.js'
import type { Actor } from './auth.js'
import type { AdminRole } from './options.js'

/** What a handler sees of a request. */
export interface AdminRequest {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** The `:param` segments of the route, decoded. */
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  readonly actor: Actor
  /** The request's id: its `X-Request-Id` when it sent a sane one, else a new UUID. */
  readonly requestId: string
  /** Where it came from (the peer's address). */
  readonly source: string
  /** The body parsed as JSON (`undefined` when empty); a 400 or 413 problem is thrown otherwise. */
  json(): Promise<unknown>
}

/** A handler's answer: a JSON body with a status (200 by default) and fields; `undefined` when it wrote `res` itself. */
export interface AdminAnswer {
  readonly status?: number
  readonly body?: unknown
  readonly headers?: Readonly<Record<string, string>>
  /** For a change: what it acted on, and for a configuration change its hashes and diff (the audit entry). */
  readonly audit?: Pick<AdminAction, 'target' | 'before' | 'after' | 'diff'>
}

/** One endpoint of the API. */
export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** The path under `/v1`, with `:name` segments (`/limiter/keys/:key`). */
  readonly path: string
  /** The least role it takes: `read` for reading, `admin` for changing. */
  readonly role: AdminRole
  /** One line for the index (`GET /v1`). */
  readonly summary: string
  /** For a change: its name in the audit trail, `<area>.<verb>` (`anomaly.unblock`). */
  readonly action?: string
  handle(request: AdminRequest): AdminAnswer | undefined | Promise<AdminAnswer | undefined>
}

/** A refusal a handler throws: answered as problem+json. */
export class AdminProblem extends AegisError {
  readonly rejection: Rejection

  // AegisError's check matches every branded error: this one is only what it says it is.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return (
      typeof value === 'object' &&
      value !== null &&
      Object.prototype.isPrototypeOf.call(AdminProblem.prototype, value)
    )
  }

  constructor(
    status: number,
    code: ErrorCode,
    title: string,
    detail?: string,
    headers?: Record<string, string>,
    extensions?: Record<string, unknown>,
  ) {
    super(code, detail ?? title, { status })
    this.rejection = problem({
      status,
      code,
      reason: 'admin',
      title,
      ...(detail === undefined ? {} : { detail }),
      ...(headers === undefined ? {} : { headers }),
      ...(extensions === undefined ? {} : { extensions }),
    })
  }
}

/** A compiled route table: match a method and path to a route and its params. */
export interface Router {
  /** The route and its params; `methods` lists what the path takes when the method is not among them. */
  match(
    method: string,
    path: string,
  ): { route: AdminRoute; params: Record<string, string> } | { methods: string[] } | undefined
  readonly routes: readonly AdminRoute[]
}

/**
 * @example
 * const router = createRouter([{ method: 'GET', path: '/status', role: 'read', summary: '…', handle: () => ({ body: {} }) }])
 * router.match('GET', '/status')
 */
export function createRouter(routes: readonly AdminRoute[]): Router {
  const compiled = routes.map((route) => ({ route, parts: route.path.split('/').slice(1) }))
  return {
    routes,
    match(method, path) {
      const parts = path.split('/').slice(1)
      const methods: string[] = []
      for (const { route, parts: pattern } of compiled) {
        if (pattern.length !== parts.length) continue
        const params: Record<string, string> = {}
        let ok = true
        for (let i = 0; i < parts.length && ok; i++) {
          const p = pattern[i] as string
          const v = parts[i] as string
          if (p.startsWith(':')) {
            let decoded: string
            try {
              decoded = decodeURIComponent(v)
            } catch {
              ok = false
              break
            }
            if (decoded === '') ok = false
            else params[p.slice(1)] = decoded
          } else ok = p === v
        }
        if (!ok) continue
        if (route.method === method) return { route, params }
        methods.push(route.method)
      }
      return methods.length === 0 ? undefined : { methods }
    },
  }
}

/** Write a JSON answer. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers?: Readonly<Record<string, string>>,
): void {
  const text = body === undefined ? '' : JSON.stringify(body)
  res.writeHead(status, {
    ...(text === ''
      ? {}
      : { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) }),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  })
  res.end(text)
}

/** Write a rejection (problem+json). */
export function sendRejection(
  res: ServerResponse,
  rejection: Rejection,
  extra?: Readonly<Record<string, string>>,
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(rejection.status, { ...rejection.headers, 'x-content-type-options': 'nosniff', ...extra })
  res.end(rejection.body)
}

/**
 * Read a request's body to at most `limit` bytes and parse it as JSON.
 *
 * @example
 * const body = await readJson(req, 1024 * 1024)
 */
export function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const type = req.headers['content-type']
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) > limit) {
      reject(tooLarge(limit))
      req.resume()
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (chunk: Buffer) => {
      if (failed) return
      size += chunk.length
      if (size > limit) {
        failed = true
        reject(tooLarge(limit))
        return
      }
      chunks.push(chunk)
    })
    req.on('error', (err) => {
      if (!failed) reject(err)
      failed = true
    })
    req.on('end', () => {
      if (failed) return
      if (size === 0) {
        resolve(undefined)
        return
      }
      if (type !== undefined && !/^application\/([\w.+-]*\+)?json\b/i.test(type)) {
        reject(
          new AdminProblem(
            415,
            ErrorCodes.BAD_REQUEST,
            'Unsupported Media Type',
            'send the body as application/json',
          ),
        )
        return
      }
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
      } catch (err) {
        reject(
          new AdminProblem(
            400,
            ErrorCodes.BAD_REQUEST,
            'Bad Request',
            `the body is no JSON: ${err instanceof Error ? err.message : String(err)}`,
          ),
        )
      }
    })
  })
}

const tooLarge = (limit: number): AdminProblem =>
  new AdminProblem(
    413,
    ErrorCodes.BODY_TOO_LARGE,
    'Content Too Large',
    `the body may take at most ${limit} bytes`,
  )
