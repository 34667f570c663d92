import type { IncomingMessage } from 'node:http'
import { ErrorCodes } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'
import { authorityPort, compileHostAllowlist, normalizeHost, type HostMatcher } from './host.js'
import type { ValidatorConfig } from './options.js'
import { inspectPath } from './path.js'
import { pathOf } from '../kernel/url.js'

export { validatorSchema, DEFAULT_METHODS } from './options.js'
export type { ValidatorOptions, ValidatorConfig } from './options.js'
export { normalizeHost, authorityPort, compileHostAllowlist } from './host.js'
export { inspectPath, percentDecode } from './path.js'
export { bodyTooLarge } from './body-limits.js'
export { watchBodySize } from '../node/body-watch.js'
export { createRouteValidator } from './route-schema.js'
export type { RouteSchemas, RouteInput, RouteValidator } from './route-schema.js'

/** What `inspect` learned about a request it let through. */
export interface RequestShape {
  /**
   * The body's size must be counted as it streams: a chunked body, or a declared
   * length above `maxBodyBytes` that a proxy route may still allow.
   */
  watch: boolean
  /** The largest body any proxy route allows (set by the caller; `maxBodyBytes` when there is none). */
  ceiling: number
}

/** The request-hardening engine: pure checks on what Node parsed. */
export interface Validator {
  /** A rejection, or `undefined` when the request may proceed. `shape` is filled in. */
  inspect(req: IncomingMessage, shape: RequestShape): Rejection | undefined
  readonly maxBodyBytes: number
  /** The methods allowed, as an `Allow` value. */
  readonly allow: string
  /** Whether a method is on the allowlist. */
  allows(method: string): boolean
  /** The 405 answer. */
  readonly methodRejection: Rejection
}

/** 400 for a path with a dot-dot segment in some encoding (the validator's and the gateway's answer). */
export const pathTraversal = problem({
  status: 400,
  code: ErrorCodes.PATH_TRAVERSAL,
  reason: 'traversal',
  title: 'Bad Request',
  detail: 'The path contains a dot-dot segment in some encoding.',
})

/**
 * Build the validator. All rejections are built here, once.
 *
 * @example
 * const v = createValidator(parseOptions().validator as ValidatorConfig)
 * const rejection = v.inspect(req, { watch: false, ceiling: v.maxBodyBytes })
 */
export function createValidator(config: ValidatorConfig): Validator {
  const methods = new Set(config.methods)
  const allow = [...methods].join(', ')
  const hostAllowed: HostMatcher | undefined = config.allowedHosts
    ? compileHostAllowlist(config.allowedHosts)
    : undefined
  const { maxHeaders, maxHeaderBytes, maxBodyBytes } = config

  const r = {
    method: problem({
      status: 405,
      code: ErrorCodes.METHOD_NOT_ALLOWED,
      reason: 'method',
      title: 'Method Not Allowed',
      detail: `Allowed methods: ${allow}.`,
      headers: { allow },
    }),
    headerCount: problem({
      status: 431,
      code: ErrorCodes.HEADERS_TOO_LARGE,
      reason: 'header-count',
      title: 'Request Header Fields Too Large',
      detail: `At most ${maxHeaders} header fields are accepted.`,
      headers: { connection: 'close' },
    }),
    headerSize: problem({
      status: 431,
      code: ErrorCodes.HEADERS_TOO_LARGE,
      reason: 'header-size',
      title: 'Request Header Fields Too Large',
      detail: `A header value may be at most ${maxHeaderBytes} bytes.`,
      headers: { connection: 'close' },
    }),
    framing: problem({
      status: 400,
      code: ErrorCodes.BAD_FRAMING,
      reason: 'framing',
      title: 'Bad Request',
      detail:
        'The message framing is ambiguous: Transfer-Encoding must be exactly "chunked" on HTTP/1.1, never with Content-Length, and Content-Length may appear once.',
      headers: { connection: 'close' },
    }),
    host: problem({
      status: 400,
      code: ErrorCodes.BAD_HOST,
      reason: 'host',
      title: 'Bad Request',
      detail: 'The request must name exactly one valid host (RFC 9112 §3.2).',
      headers: { connection: 'close' },
    }),
    hostMismatch: problem({
      status: 400,
      code: ErrorCodes.BAD_HOST,
      reason: 'host',
      title: 'Bad Request',
      detail:
        'An absolute-form request target and the Host header must name the same host and port (RFC 9112 §3.2.2).',
      headers: { connection: 'close' },
    }),
    hostNotAllowed: problem({
      status: 421,
      code: ErrorCodes.HOST_NOT_ALLOWED,
      reason: 'host-not-allowed',
      title: 'Misdirected Request',
      detail: 'This server does not answer for the host the request names.',
    }),
    traversal: pathTraversal,
    badPath: problem({
      status: 400,
      code: ErrorCodes.BAD_PATH,
      reason: 'path',
      title: 'Bad Request',
      detail: 'The request target is not a valid origin-form, absolute-form or asterisk-form target.',
    }),
    bodySize: problem({
      status: 413,
      code: ErrorCodes.BODY_TOO_LARGE,
      reason: 'body-size',
      title: 'Content Too Large',
      detail: `The request body may be at most ${maxBodyBytes} bytes.`,
      headers: { connection: 'close' },
    }),
  }

  // A server sees few distinct Host values; parsing one costs ~0.4 µs, a lookup
  // ~30 ns. Bounded: cleared when full, so random Host headers cannot grow it.
  const hostMemo = new Map<string, string | null>()
  const normalizedHost = (authority: string): string | undefined => {
    let n = hostMemo.get(authority)
    if (n === undefined) {
      n = normalizeHost(authority) ?? null
      if (hostMemo.size >= 1024) hostMemo.clear()
      hostMemo.set(authority, n)
    }
    return n ?? undefined
  }

  /** Whether two authorities name one host and port (the port defaulted by the target's scheme). */
  const sameAuthority = (target: string, host: string, https: boolean): boolean => {
    const name = normalizedHost(target)
    if (name === undefined || name !== normalizedHost(host)) return false
    const fallback = https ? 443 : 80
    return authorityPort(target, fallback) === authorityPort(host, fallback)
  }

  function inspect(req: IncomingMessage, shape: RequestShape): Rejection | undefined {
    if (!methods.has(req.method ?? '')) return r.method

    const raw = req.rawHeaders
    if (raw.length > maxHeaders * 2) return r.headerCount
    let host: string | undefined
    let hosts = 0
    let contentLengths = 0
    let contentLength: string | undefined
    let transferEncoding: string | undefined
    let transferEncodings = 0
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string
      const value = raw[i + 1] as string
      if (value.length > maxHeaderBytes) return r.headerSize
      // Compare names only when the length can match, and lower-case (allocate)
      // only for unusual spellings (hot path).
      const len = name.length
      if (len === 4) {
        if (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') {
          hosts++
          host = value
        }
      } else if (len === 14) {
        if (
          name === 'Content-Length' ||
          name === 'content-length' ||
          name.toLowerCase() === 'content-length'
        ) {
          contentLengths++
          contentLength = value
        }
      } else if (len === 17) {
        if (name.toLowerCase() === 'transfer-encoding') {
          transferEncodings++
          transferEncoding = value
        }
      }
    }

    // RFC 9112 §6.1-6.3: one framing, stated once. Node refuses most of this
    // itself; what it lets through (TE on HTTP/1.0, codings other than a final
    // chunked) is refused here, because a proxy behind us may read it otherwise.
    if (contentLengths > 1) return r.framing
    if (transferEncoding !== undefined) {
      if (
        transferEncodings > 1 ||
        contentLengths > 0 ||
        req.httpVersionMajor !== 1 ||
        req.httpVersionMinor !== 1 ||
        transferEncoding.trim().toLowerCase() !== 'chunked'
      ) {
        return r.framing
      }
      shape.watch = true
    }

    // RFC 9112 §3.2: exactly one Host; an absolute-form target's authority replaces it (§3.2.2).
    if (hosts > 1) return r.host
    const url = req.url ?? ''
    let path = url
    let authority = host
    const first = url.charCodeAt(0)
    if (first !== 0x2f /* / */) {
      if (url === '*' && req.method === 'OPTIONS') {
        path = '/'
      } else {
        const m = ABSOLUTE_FORM.exec(url)
        if (m === null) return r.badPath
        authority = m[1] ?? ''
        path = url.slice(m[0].length) || '/'
        if (authority.includes('@')) return r.host // userinfo has no place in a request target
        if (path.charCodeAt(0) !== 0x2f && path.charCodeAt(0) !== 0x3f) return r.badPath
        // RFC 9112 §3.2.2: the target's authority replaces Host, and it is what is
        // checked below. But Express (req.hostname), Fastify (request.host) and Koa
        // (ctx.host) read the Host field: a Host naming another host is what the app
        // would believe (password-reset poisoning past allowedHosts). Refuse the
        // mismatch instead of rewriting the request the app reads; real clients
        // (forward-proxy clients, curl -x) send the same authority in both. Without
        // Host the app reads none, so there is nothing to mismatch.
        const https = url.charCodeAt(4) === 0x73 || url.charCodeAt(4) === 0x53 /* s */
        if (host !== undefined && !sameAuthority(authority, host, https)) return r.hostMismatch
      }
    }
    if (authority !== undefined) {
      const normalized = normalizedHost(authority)
      if (normalized === undefined) return r.host
      if (hostAllowed !== undefined && !hostAllowed(normalized)) return r.hostNotAllowed
    } else if (hostAllowed !== undefined || req.httpVersionMinor >= 1) {
      // RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400 (Node checks this
      // too unless `requireHostHeader: false`; do not depend on it).
      return r.host
    }

    const verdict = inspectPath(pathOf(path))
    if (verdict === 'control') return r.badPath
    if (verdict === 'traversal' && config.traversal) return r.traversal

    if (contentLength !== undefined && Number(contentLength) > maxBodyBytes) {
      // A proxy route may take it: count it as it streams, at the default limit until the route raises it.
      if (Number(contentLength) > shape.ceiling) return r.bodySize
      shape.watch = true
    }
    return undefined
  }

  return { inspect, maxBodyBytes, allow, allows: (m) => methods.has(m), methodRejection: r.method }
}

// absolute-form = scheme "://" authority path-abempty [ "?" query ]
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i
