/**
 * What the ghost cache may learn, and what it may serve stale: RFC 9111 read as a
 * shared cache reads it, stricter where serving a stranger's answer could leak or
 * poison. Plain functions of the request and the response: the engine calls them at
 * the gateway's response tap and at the frameworks' send hooks.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { parseCacheControl, secondsOf, type Directives } from './cache-control.js'

/** Why a response was not learned (the `reason` label of the refusals counter). */
export type Refusal =
  | 'method'
  | 'status'
  | 'no-store'
  | 'private'
  | 'set-cookie'
  | 'credentials'
  | 'vary-star'
  | 'request-body'
  | 'unkeyed-header'

/** Statuses learned by default: answers a shared cache may store and the client expects whole. */
export const LEARNED_STATUSES: ReadonlySet<number> = new Set([200, 203])

/**
 * Request fields some backends route by although no cache keys on them (IIS' and
 * Symfony's `X-Original-URL` / `X-Rewrite-URL`, `X-Forwarded-Host` behind an untrusting
 * proxy): a response to a request carrying one may not be what its URL names, so it is
 * never learned (web cache poisoning, PortSwigger 2018).
 */
const UNKEYED = ['x-original-url', 'x-rewrite-url', 'x-forwarded-host', 'x-http-method-override'] as const

/** Options of one route that change what is learned. */
export interface LearnOptions {
  /** Statuses learned (default {@link LEARNED_STATUSES}; a route may add 301, 308, 404, 410). */
  readonly statuses?: ReadonlySet<number>
  /** Learn answers to requests with `Authorization` or `Cookie`, keyed to a hash of them. */
  readonly credentialed?: boolean
  /** The answer's `Cache-Control`, when the caller has parsed it already. */
  readonly cc?: Directives
}

/**
 * `undefined` when the response to `req` may be learned; otherwise why not. Never a
 * response marked `no-store` or `private` (RFC 9111 §3, §5.2.2.3/7), one that sets a
 * cookie, one that varies on everything (`Vary: *`, §4.1), nor one to a request whose
 * answer may be personal (`Authorization`, §3.5; `Cookie`) unless the route keys on
 * the credential, nor one to a request with a body or an unkeyed routing header.
 *
 * @example
 * const refused = refusal(req, 200, upstreamHeaders, {})
 */
export function refusal(
  req: IncomingMessage,
  status: number,
  headers: IncomingHttpHeaders,
  options: LearnOptions = {},
): Refusal | undefined {
  if (req.method !== 'GET' && req.method !== 'HEAD') return 'method'
  if (!(options.statuses ?? LEARNED_STATUSES).has(status)) return 'status'
  // A GET with a body (a "fat GET"): what the backend answered may depend on what no key holds.
  if (req.headers['transfer-encoding'] !== undefined) return 'request-body'
  const length = req.headers['content-length']
  if (length !== undefined && length !== '0') return 'request-body'
  for (const name of UNKEYED) if (req.headers[name] !== undefined) return 'unkeyed-header'
  if (!options.credentialed && (req.headers.authorization !== undefined || req.headers.cookie !== undefined))
    return 'credentials'
  const cc = options.cc ?? parseCacheControl(headers['cache-control'])
  if (cc.has('no-store') || surrogate(headers).has('no-store')) return 'no-store'
  if (cc.has('private')) return 'private'
  if (headers['set-cookie'] !== undefined) return 'set-cookie'
  if (varyNames(headers.vary) === '*') return 'vary-star'
  return undefined
}

/**
 * The `Surrogate-Control` directives addressed to every surrogate (a directive with a
 * `;target` names a particular one: not us). A gateway is a surrogate: its `no-store`
 * and `max-age` win over `Cache-Control`'s (Edge Architecture Specification 1.0).
 */
export function surrogate(headers: IncomingHttpHeaders): Directives {
  const field = headers['surrogate-control']
  if (field === undefined) return parseCacheControl(undefined)
  const members = (Array.isArray(field) ? field.join(',') : String(field))
    .split(',')
    .filter((m) => !m.includes(';'))
  return parseCacheControl(members.join(','))
}

/**
 * The request fields a response varies on, lower-cased and sorted, or `'*'`.
 *
 * @example
 * varyNames('Accept-Language, accept-encoding') // ['accept-encoding', 'accept-language']
 */
export function varyNames(vary: string | string[] | undefined): readonly string[] | '*' {
  if (vary === undefined) return []
  const names = (typeof vary === 'string' ? vary : vary.join(','))
    .split(',')
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== '')
  if (names.includes('*')) return '*'
  return [...new Set(names)].sort()
}

/**
 * Whether the response forbids being served stale: `no-cache` (it must be validated
 * first), `must-revalidate`, `proxy-revalidate`, or an `s-maxage` (which implies
 * `proxy-revalidate` for a shared cache) — RFC 9111 §4.2.4, §5.2.2.
 *
 * @example
 * staleForbidden(parseCacheControl('max-age=60, must-revalidate')) // true
 */
export function staleForbidden(cc: Directives): boolean {
  return cc.has('no-cache') || cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage')
}

/** The freshness of a stored response, in milliseconds (RFC 9111 §4.2). */
export interface Freshness {
  /** How long it is fresh after it was generated; 0 when it has no explicit lifetime. */
  readonly lifetimeMs: number
  /** Its age when it was received (`Age`, and the difference between `Date` and receipt). */
  readonly ageMs: number
}

/** The oldest age there is (RFC 9111 §1.2.2's cap of delta-seconds), in seconds. */
export const MAX_AGE_SECONDS = 2 ** 31

/**
 * `Age` in seconds. One field of digits only (§5.1); anything else — a list, a repeated
 * field, a sign, a fraction, parameters — cannot be trusted, and the answer is taken as
 * old as can be: stale at once (as the HTTP cache tests expect of a shared cache).
 */
function ageSeconds(field: string | undefined): number {
  if (field === undefined) return 0
  if (!/^\d+$/.test(field.trim())) return MAX_AGE_SECONDS
  return Math.min(Number(field), MAX_AGE_SECONDS)
}

// The last `Date` read: answers arriving within a second carry the same one, parsed once.
let lastDate: [string, number | undefined] = ['', undefined]
const parseDate = (value: string | undefined): number | undefined => {
  if (value === undefined) return undefined
  if (value === lastDate[0]) return lastDate[1]
  const t = Date.parse(value)
  const parsed = Number.isNaN(t) ? undefined : t
  lastDate = [value, parsed]
  return parsed
}

/**
 * Freshness lifetime (§4.2.1: `s-maxage`, else `max-age`, else `Expires` − `Date`) and the
 * age at receipt (§4.2.3, with the request taken as sent at `receivedAt`). No heuristic
 * freshness (§4.2.2): a response without explicit freshness is stale at once, and served
 * only as a ghost, within the route's operator TTL.
 *
 * @example
 * freshness({ 'cache-control': 'max-age=60', age: '10' }, Date.now()) // { lifetimeMs: 60000, ageMs: 10000 }
 */
export function freshness(
  headers: IncomingHttpHeaders,
  receivedAt: number,
  cc: Directives = parseCacheControl(headers['cache-control']),
): Freshness {
  const date = parseDate(headers.date)
  let lifetimeSeconds =
    secondsOf(surrogate(headers), 'max-age') ?? secondsOf(cc, 's-maxage') ?? secondsOf(cc, 'max-age')
  if (lifetimeSeconds === undefined && headers.expires !== undefined) {
    // An invalid Expires (`0`, a bad date) means already expired (§5.3).
    const expires = parseDate(headers.expires)
    lifetimeSeconds = expires === undefined ? 0 : Math.max(0, (expires - (date ?? receivedAt)) / 1000)
  }
  const ageValue = ageSeconds(headers.age) * 1000
  const apparent = date === undefined ? 0 : Math.max(0, receivedAt - date)
  return { lifetimeMs: (lifetimeSeconds ?? 0) * 1000, ageMs: Math.max(apparent, ageValue) }
}
