/**
 * A learned answer as it is kept and as it is given back: the fields worth keeping
 * (no connection's, no framing, no per-exchange ones), and the answer written from an
 * entry — its status, fields and body, or a 304 when the request's validators match —
 * with `Age` (RFC 9111 §5.1), `Cache-Status` (RFC 9211) and `X-Aegis-Ghost`.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { HOP_BY_HOP } from '../kernel/option-helpers.js'
import { connectionTokens } from '../gateway/headers.js'
import { MAX_AGE_SECONDS } from './policy.js'
import type { GhostEntry } from './store.js'

/**
 * Fields never kept: Node frames the replay itself, `Age` is computed when served, and
 * `Surrogate-Control` was addressed to us (the surrogate), not to the client.
 */
const NOT_KEPT = new Set([...HOP_BY_HOP, 'content-length', 'age', 'surrogate-control'])

/**
 * The fields of an answer as an entry keeps them, lower-case names: without the
 * hop-by-hop ones (and those its `Connection` names), the framing, `Age`, and
 * `perExchange` (the request id, which belongs to the request that was answered).
 *
 * @example
 * keptHeaders({ 'content-type': 'text/plain', connection: 'close' }) // { 'content-type': 'text/plain' }
 */
export function keptHeaders(
  headers: IncomingHttpHeaders | OutgoingHttpHeaders,
  perExchange?: string,
): Record<string, string | string[]> {
  const named = connectionTokens(headers.connection)
  const kept: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    const lower = name.toLowerCase()
    if (NOT_KEPT.has(lower) || named?.has(lower) === true || lower === perExchange) continue
    kept[lower] = Array.isArray(value) ? value.map(String) : String(value)
  }
  return kept
}

/** Why an answer came from the ghost: the `detail` of its `Cache-Status`. */
export type ServeKind = 'stale-if-error' | 'stale-while-revalidate' | 'fresh' | 'revalidated' | 'synthesized'

const single = (v: string | readonly string[] | undefined): string | undefined =>
  v === undefined ? undefined : typeof v === 'string' ? v : v.join(', ')

/** An entity tag without its weakness mark, for the weak comparison of RFC 9110 §8.8.3.2. */
const opaque = (tag: string): string => (tag.startsWith('W/') ? tag.slice(2) : tag).trim()

/**
 * Whether the request's validators match the entry, so that a 304 answers it (RFC 9110
 * §13.1.2, §13.1.3): `If-None-Match` by weak comparison when present, else
 * `If-Modified-Since` against `Last-Modified`.
 */
export function notModified(req: IncomingHttpHeaders, entry: GhostEntry): boolean {
  const inm = req['if-none-match']
  if (inm !== undefined) {
    const etag = single(entry.headers.etag)
    if (etag === undefined) return false
    if (inm.trim() === '*') return true
    const own = opaque(etag)
    return inm.split(',').some((t) => opaque(t) === own)
  }
  const ims = req['if-modified-since']
  const lastModified = single(entry.headers['last-modified'])
  if (ims === undefined || lastModified === undefined) return false
  const since = Date.parse(ims)
  const modified = Date.parse(lastModified)
  return !Number.isNaN(since) && !Number.isNaN(modified) && modified <= since
}

/** The fields a 304 carries of its stored answer (RFC 9110 §15.4.5). */
const NOT_MODIFIED_FIELDS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary']

/** An entry's age now, in milliseconds (RFC 9111 §4.2.3: its age at receipt, and the time since). */
export const ageMs = (entry: GhostEntry, now: number): number => entry.ageMs + now - entry.receivedAt

/**
 * The entry's age now, in whole seconds (RFC 9111 §4.2.3), at most 2^31: an upstream's
 * `Age: 1e300` would otherwise be sent on as `Age: 1e+297`, which is no delta-seconds.
 */
export const ageOf = (entry: GhostEntry, now: number): number =>
  Math.min(MAX_AGE_SECONDS, Math.max(0, Math.floor(ageMs(entry, now) / 1000)))

/**
 * Answer on `res` from `entry`: the status (or 304), the fields over those already on
 * `res` (Aegis' own), `Age`, `Cache-Status` appended to any the entry carries, and
 * `X-Aegis-Ghost`. `head`: no body (a HEAD answered from a GET's entry).
 *
 * @example
 * writeEntry(res, entry, req.headers, { head: false, kind: 'stale-if-error', now: Date.now() })
 */
export function writeEntry(
  res: ServerResponse,
  entry: GhostEntry,
  request: IncomingHttpHeaders,
  how: { readonly head: boolean; readonly kind: ServeKind; readonly now: number },
): void {
  const unchanged = notModified(request, entry)
  for (const name in entry.headers) {
    if (unchanged && !NOT_MODIFIED_FIELDS.includes(name)) continue
    res.setHeader(name, entry.headers[name] as string | string[])
  }
  const age = ageOf(entry, how.now)
  res.setHeader('age', String(age))
  const ours =
    how.kind === 'fresh'
      ? `aegis; hit; ttl=${Math.floor((entry.lifetimeMs - entry.ageMs) / 1000) - age}`
      : how.kind === 'revalidated'
        ? 'aegis; fwd=stale; fwd-status=304; stored'
        : `aegis; hit; detail=${how.kind}`
  const before = single(entry.headers['cache-status'])
  res.setHeader('cache-status', before === undefined ? ours : `${before}, ${ours}`)
  if (how.kind !== 'fresh' && how.kind !== 'revalidated')
    res.setHeader('x-aegis-ghost', how.kind === 'synthesized' ? 'synthesized' : '1')
  if (unchanged) {
    res.writeHead(304)
    res.end()
    return
  }
  res.setHeader('content-length', String(entry.body.length))
  res.writeHead(entry.status)
  // Node writes no body for a HEAD, but the length stays the GET's, as RFC 9110 §9.3.2 asks.
  res.end(how.head ? undefined : entry.body)
}
