/**
 * Learning: from an answer about to be forwarded (or written by the app) to an entry in
 * the store — if the policy allows it (policy.ts), if the body fits, and once the whole
 * body went out. Refusals are counted by reason; what an unsafe method changed is forgotten.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { BodyTap } from '../kernel/engine.js'
import { parseCacheControl } from './cache-control.js'
import { baseKey, fieldOf, fullKey } from './key.js'
import type { GhostSettings } from './options.js'
import { freshness, refusal, staleForbidden, surrogate, varyNames } from './policy.js'
import { keptHeaders } from './serve.js'
import type { GhostEntry, GhostStore } from './store.js'

/** One route's settings, with the sets its checks read. */
export interface RouteGhost {
  readonly name: string
  readonly settings: Readonly<GhostSettings>
  readonly statuses: ReadonlySet<number>
  readonly learn: ReadonlySet<number>
  /** The route's request-id field: it belongs to one exchange and is never kept. */
  readonly requestId: string | undefined
}

/**
 * @example
 * const g = routeGhost('api', settings, 'x-request-id')
 */
export const routeGhost = (
  name: string,
  settings: Readonly<GhostSettings>,
  requestId: string | undefined,
): RouteGhost => ({
  name,
  settings,
  statuses: new Set(settings.statuses),
  learn: new Set(settings.learn),
  requestId,
})

/**
 * The key an entry of this request lives under: the base key, and the credential's hash
 * where the route learns credentialed answers and the request carries one.
 */
export function keyOf(req: IncomingMessage, target: string, g: RouteGhost): string {
  const base = baseKey(req.method ?? 'GET', req.headers.host, target)
  return g.settings.credentials &&
    (req.headers.authorization !== undefined || req.headers.cookie !== undefined)
    ? fullKey(base, [], req.headers, true)
    : base
}

/** What learning reports, for the metrics and the route templates. */
export interface LearnEvents {
  refused(g: RouteGhost, target: string, reason: string): void
  learned(g: RouteGhost, target: string, key: string): void
  /** The store threw (a bug: stores report their own outages by having nothing). */
  failed(err: unknown): void
}

const EXPLICIT = ['max-age', 's-maxage']
/** An entry is re-learned at most this often: its upstream answers every request meanwhile. */
const RELEARN_MS = 1000
/** Keys remembered as recently learned, at most. */
const RECENT_KEYS = 10_000

/**
 * The body in a buffer of its own, exactly its size. The chunks are slices of bigger
 * buffers (a socket read's, Node's 8 KiB pool): kept as they are, a 17-byte body would hold
 * its whole slab alive for as long as the entry lives — the byte bound would count 17.
 */
function ownCopy(chunks: readonly Buffer[], size: number): Buffer {
  const body = Buffer.allocUnsafeSlow(size)
  let at = 0
  for (const chunk of chunks) at += chunk.copy(body, at)
  return body
}

/** What tells two answers apart for re-learning: the request as sent, and its `Vary`'d fields. */
function relearnKey(req: IncomingMessage, target: string, vary: string | string[] | undefined): string {
  let key = `${req.headers.host ?? ''} ${target}`
  if (vary !== undefined)
    for (const name of varyNames(vary) as readonly string[]) key += `\n${fieldOf(req.headers, name)}`
  return key
}

/** When an answer's entry is fresh until, and served until. */
export type Timing = Pick<GhostEntry, 'receivedAt' | 'lifetimeMs' | 'ageMs' | 'staleForbidden' | 'expiresAt'>

/**
 * The timing of an entry for an answer with these fields received at `receivedAt`: its
 * freshness (the operator's `ttl` when it states none — nginx's `proxy_cache_valid`, never a
 * heuristic), its age then, whether it forbids being served stale, and `maxStale` past its
 * freshness as the end.
 *
 * @example
 * timing({ 'cache-control': 'max-age=60' }, Date.now(), g).lifetimeMs // 60000
 */
export function timing(
  headers: IncomingHttpHeaders,
  receivedAt: number,
  g: RouteGhost,
  cc = parseCacheControl(headers['cache-control']),
): Timing {
  const fresh = freshness(headers, receivedAt, cc)
  const explicit =
    EXPLICIT.some((d) => cc.has(d)) || headers.expires !== undefined || surrogate(headers).has('max-age')
  const lifetimeMs = explicit ? fresh.lifetimeMs : g.settings.ttl * 1000
  return {
    receivedAt,
    lifetimeMs,
    ageMs: fresh.ageMs,
    staleForbidden: staleForbidden(cc),
    expiresAt: receivedAt + Math.max(0, lifetimeMs - fresh.ageMs) + g.settings.maxStale * 1000,
  }
}
/** Methods defined as safe (RFC 9110 §9.2.1): every other one may change the resource. */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

/**
 * A tap that keeps `req`'s answer in `store` if it may be learned and fits, or `undefined`.
 *
 * @example
 * const tap = learner(store, events)(req, target, 200, headers, g)
 */
export function learner(store: GhostStore, events: LearnEvents) {
  // Keys learned in the last second (`RELEARN_MS`): an answer each request, re-learned once a second
  // at most, costs the proxy a key lookup rather than a copy of its body. Cleared when it grows past
  // its bound: at worst a key is learned once more than needed.
  let recent = new Map<string, number>()
  return (
    req: IncomingMessage,
    target: string,
    status: number,
    headers: IncomingHttpHeaders,
    g: RouteGhost,
  ): BodyTap | undefined => {
    // A HEAD's answer has no body to give a GET; a HEAD is answered from a GET's entry.
    if (req.method !== 'GET') return undefined
    const credentialed =
      g.settings.credentials && (req.headers.authorization !== undefined || req.headers.cookie !== undefined)
    const seen = credentialed ? undefined : relearnKey(req, target, headers.vary)
    const now = Date.now()
    if (seen !== undefined && now - (recent.get(seen) ?? -RELEARN_MS) < RELEARN_MS) return undefined
    const cc = parseCacheControl(headers['cache-control'])
    let why: string | undefined = refusal(req, status, headers, {
      statuses: g.learn,
      credentialed: g.settings.credentials,
      cc,
    })
    // A request's own no-store forbids keeping its answer too (RFC 9111 §5.2.1.5).
    if (why === undefined && parseCacheControl(req.headers['cache-control']).has('no-store')) why = 'no-store'
    if (why === undefined && Number(headers['content-length']) > g.settings.maxEntryBytes) why = 'too-large'
    if (why !== undefined) {
      // Methods and statuses never learned are not refusals worth counting.
      if (why !== 'method' && why !== 'status') events.refused(g, target, why)
      return undefined
    }
    const max = g.settings.maxEntryBytes
    const key = keyOf(req, target, g)
    const vary = varyNames(headers.vary) as readonly string[]
    const varyValues = vary.map((name) => fieldOf(req.headers, name))
    const receivedAt = now
    const chunks: Buffer[] = []
    let size = 0
    return {
      chunk(data) {
        if (size > max) return
        size += data.length
        if (size > max) chunks.length = 0
        else chunks.push(data)
      },
      end(complete) {
        if (!complete || size > max) return events.refused(g, target, complete ? 'too-large' : 'incomplete')
        const entry: GhostEntry = {
          status,
          headers: keptHeaders(headers, g.requestId),
          body: ownCopy(chunks, size),
          vary,
          varyValues,
          ...timing(headers, receivedAt, g, cc),
          route: g.name,
        }
        const kept = (ok: boolean): void => {
          if (!ok) return events.refused(g, target, 'too-large')
          if (seen !== undefined) {
            if (recent.size >= RECENT_KEYS) recent = new Map()
            recent.set(seen, receivedAt)
          }
          events.learned(g, target, key)
        }
        try {
          const stored = store.set(key, entry)
          if (typeof stored === 'boolean') kept(stored)
          // A shared store that is down rejects: counted, not logged (the store reports its own outage).
          else stored.then(kept, () => events.refused(g, target, 'store-down'))
        } catch (err) {
          events.failed(err)
        }
      },
    }
  }
}

/**
 * The keys an unsafe request's successful answer makes stale (RFC 9111 §4.4): its own
 * URL's, and those its `Location` and `Content-Location` name on the same host. Empty for
 * a safe method or an error answer.
 *
 * @example
 * invalidated(req, '/items/1', 204, {}) // ['GET example.com/items/1'] for a DELETE
 */
export function invalidated(
  req: IncomingMessage,
  target: string,
  status: number,
  headers: IncomingHttpHeaders,
): string[] {
  if (SAFE.has(req.method ?? 'GET') || status >= 400) return []
  const host = req.headers.host
  const keys = [baseKey('GET', host, target)]
  for (const name of ['location', 'content-location'] as const) {
    const value = headers[name]
    if (typeof value !== 'string') continue
    try {
      const origin = `http://${host ?? 'localhost'}`
      const url = new URL(value, `${origin}${target.startsWith('/') ? target : '/'}`)
      if (url.origin === new URL(origin).origin)
        keys.push(baseKey('GET', host, `${url.pathname}${url.search}`))
    } catch {
      // Not a URL: nothing to forget.
    }
  }
  return keys
}
