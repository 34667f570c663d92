/**
 * Who is asking, and whether they may: the admin API's checks, in the order a request
 * meets them. Modelled on Caddy's admin endpoint (a `Host` allow-list against DNS
 * rebinding, an `Origin` check) and Envoy's (mutations never by GET, since a CSRF
 * finding), with bearer tokens compared in constant time and two roles.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { AdminConfig, AdminRole, ListenAddress } from './options.js'

/** A token's holder: its name (the actor in the audit trail) and its role. */
export interface Actor {
  readonly name: string
  readonly role: AdminRole
}

/** Why a request is refused before any endpoint sees it. */
export type Refusal = 'host' | 'origin' | 'token'

const digest = (s: string): Buffer => createHash('sha256').update(s).digest()

/**
 * The token check: every configured token's digest is compared with the presented one's,
 * all of them every time, so that neither a token's length nor its place in the list shows
 * in the time an answer takes.
 *
 * @example
 * const tokens = tokenTable(config)
 * tokens.actorOf('Bearer 0123456789abcdef') // { name: 'admin', role: 'admin' } or undefined
 */
export function tokenTable(config: AdminConfig): {
  actorOf(authorization: string | undefined): Actor | undefined
} {
  const table = [
    ...(config.token === undefined ? [] : [{ name: 'admin', role: 'admin' as const, token: config.token }]),
    ...config.tokens,
  ].map((t) => ({ actor: Object.freeze({ name: t.name, role: t.role }), digest: digest(t.token) }))
  return {
    actorOf(authorization) {
      if (authorization === undefined) return undefined
      const m = /^Bearer +([\x21-\x7e]{1,512}) *$/i.exec(authorization)
      if (m === null) return undefined
      const presented = digest(m[1] as string)
      let found: Actor | undefined
      for (const t of table) if (timingSafeEqual(t.digest, presented) && found === undefined) found = t.actor
      return found
    },
  }
}

/** The host names a request may name in `Host`: the listener's, loopback's and the configured ones. */
export function allowedHosts(config: AdminConfig, listen: ListenAddress | undefined): ReadonlySet<string> {
  const hosts = new Set(['localhost', '127.0.0.1', '[::1]', ...config.hosts.map((h) => h.toLowerCase())])
  if (listen !== undefined) hosts.add(listen.host.includes(':') ? `[${listen.host}]` : listen.host)
  return hosts
}

/** The name in a `Host` field, port dropped and lower-cased (`[::1]` keeps its brackets). */
function hostName(host: string): string {
  const h = host.trim().toLowerCase()
  if (h.startsWith('[')) {
    const end = h.indexOf(']')
    return end < 0 ? h : h.slice(0, end + 1)
  }
  const colon = h.indexOf(':')
  return colon < 0 ? h : h.slice(0, colon)
}

/**
 * The first check a request fails, or `undefined`: a `Host` not allowed (DNS rebinding), an
 * `Origin` not allowed (a page elsewhere), no valid token.
 */
export function screen(
  req: IncomingMessage,
  hosts: ReadonlySet<string>,
  origins: ReadonlySet<string>,
): Exclude<Refusal, 'token'> | undefined {
  const host = req.headers.host
  if (host === undefined || !hosts.has(hostName(host))) return 'host'
  const origin = req.headers.origin
  if (
    origin !== undefined &&
    origin !== `http://${host}` &&
    origin !== `https://${host}` &&
    !origins.has(origin)
  )
    return 'origin'
  // A browser that sends no Origin (an old one, a navigation) still says where a request comes from.
  if (origin === undefined && req.headers['sec-fetch-site'] === 'cross-site') return 'origin'
  return undefined
}
