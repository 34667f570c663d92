import type { IncomingMessage } from 'node:http'
import { ErrorCodes } from '../kernel/errors.js'
import { guardCallback } from '../kernel/callbacks.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'
import type { CorsConfig } from './options.js'

export { corsSchema } from './options.js'
export type { CorsOptions, CorsConfig, OriginFunction } from './options.js'

/** What CORS decided for one request. */
export type CorsVerdict =
  /** Not a CORS request (no Origin), or origin not allowed on a simple request: add these headers. */
  | { readonly kind: 'headers'; readonly headers: ReadonlyArray<readonly [string, string]> }
  /** A preflight: answer it with this (204 with the grants, or 403). */
  | { readonly kind: 'preflight'; readonly response: Rejection }

export interface Cors {
  evaluate(req: IncomingMessage): CorsVerdict
}

const VARY_ORIGIN = [['vary', 'Origin']] as const

/**
 * CORS answered by Aegis, the same on every framework: preflights never reach
 * the app, allowed origins are reflected (never `*` with credentials), and
 * `Vary: Origin` is set whenever the answer depends on the origin.
 *
 * @example
 * const cors = createCors(corsConfig)
 * const verdict = cors.evaluate(req)
 */
export function createCors(config: CorsConfig): Cors {
  const origin =
    typeof config.origin === 'function' ? guardCallback('cors.origin', config.origin) : config.origin
  const wildcard = origin === '*'
  const allowOrigin = (value: string, req: IncomingMessage): boolean => {
    if (wildcard) return true
    if (typeof origin === 'string') return value.toLowerCase() === origin
    if (origin instanceof RegExp) return origin.test(value)
    if (typeof origin === 'function') return origin(value, req) === true
    const lower = value.toLowerCase()
    return origin.some((o) => (typeof o === 'string' ? o === lower : o.test(value)))
  }
  const methods = new Set(config.methods)
  const allowMethods = config.methods.join(', ')
  const allowedHeaders = config.allowedHeaders?.map((h) => h.toLowerCase())
  const exposed = config.exposedHeaders.join(', ')

  const denied = problem({
    status: 403,
    code: ErrorCodes.CORS_ORIGIN,
    reason: 'cors',
    title: 'Forbidden',
    detail: 'The origin, method or headers of this preflight are not allowed.',
    headers: { vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers' },
  })

  const grant = (value: string): [string, string][] => {
    const h: [string, string][] = [
      ['access-control-allow-origin', wildcard && !config.credentials ? '*' : value],
    ]
    if (config.credentials) h.push(['access-control-allow-credentials', 'true'])
    return h
  }

  return {
    evaluate(req) {
      const value = req.headers.origin
      const isPreflight =
        req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined
      if (value === undefined) return { kind: 'headers', headers: wildcard ? [] : VARY_ORIGIN }
      const allowed = allowOrigin(value, req)
      if (!isPreflight) {
        if (!allowed) return { kind: 'headers', headers: VARY_ORIGIN }
        const h = grant(value)
        if (!wildcard) h.push(['vary', 'Origin'])
        if (exposed) h.push(['access-control-expose-headers', exposed])
        return { kind: 'headers', headers: h }
      }
      const method = String(req.headers['access-control-request-method']).toUpperCase()
      const requested = (req.headers['access-control-request-headers'] ?? '')
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean)
      const headersOk = allowedHeaders === undefined || requested.every((h) => allowedHeaders.includes(h))
      if (!allowed || !methods.has(method) || !headersOk) return { kind: 'preflight', response: denied }
      const h = grant(value)
      h.push(['access-control-allow-methods', allowMethods])
      const allowHeaders =
        allowedHeaders === undefined ? requested.join(', ') : config.allowedHeaders?.join(', ')
      if (allowHeaders) h.push(['access-control-allow-headers', allowHeaders])
      h.push(['access-control-max-age', String(config.maxAge)])
      h.push(['vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers'])
      return {
        kind: 'preflight',
        response: {
          status: 204,
          reason: 'preflight',
          headers: Object.fromEntries(h),
          body: '',
        },
      }
    },
  }
}
