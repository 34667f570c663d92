/**
 * The ghost cache as a shared cache, before a proxy route forwards (RFC 9111): a fresh
 * entry the request accepts is the answer (`serveFresh`); near the end of its freshness one
 * request refreshes it while the others are answered (`refreshAhead`); past it, while one
 * request for a key is upstream the others get the stale entry (`staleWhileRevalidate`,
 * nginx's `proxy_cache_lock` with `use_stale updating`); a stale entry's validator goes
 * upstream, and the 304 refreshes it.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { parseCacheControl, secondsOf } from './cache-control.js'
import { keyOf, timing, type RouteGhost } from './learn.js'
import type { GhostMetrics } from './metrics.js'
import { ageMs, ageOf, keptHeaders, type ServeKind } from './serve.js'
import type { GhostEntry, GhostStore } from './store.js'

/** A revalidation the ghost asked for: the request field it added, and the entry it would refresh. */
interface Revalidation {
  readonly key: string
  readonly entry: GhostEntry
  readonly field: 'if-none-match' | 'if-modified-since'
}

type Found = GhostEntry | undefined | Promise<GhostEntry | undefined>

/** What the shared cache is built from: the engine's store, lookups and way of answering. */
export interface SharedCacheDeps {
  readonly store: GhostStore
  readonly metrics: GhostMetrics | undefined
  readonly lookup: (key: string, headers: IncomingHttpHeaders) => Found
  readonly answer: (
    req: IncomingMessage,
    res: ServerResponse,
    entry: GhostEntry,
    how: { kind: ServeKind; now: number; clear: boolean },
  ) => void
  readonly targetOf: (req: IncomingMessage) => string
}

/**
 * @example
 * const shared = sharedCache({ store, metrics, lookup, answer, targetOf })
 * shared.beforeForward(req, res, g) // true: answered from the store
 */
export function sharedCache(deps: SharedCacheDeps) {
  const { store, metrics, lookup, answer } = deps
  // Keys being fetched upstream now: the others get the entry meanwhile.
  const fetching = new Set<string>()
  // Requests sent upstream with the validators of a stale entry: a 304 refreshes it.
  const revalidating = new WeakMap<IncomingMessage, Revalidation>()
  /** This request fetches `key`, until its response is over. */
  const fetches = (res: ServerResponse, key: string): void => {
    fetching.add(key)
    res.once('close', () => fetching.delete(key))
  }

  /**
   * Before forwarding (`serveFresh`, `staleWhileRevalidate`): a fresh entry the request
   * accepts is the answer; a stale one within its window is, while another request for the
   * same key is upstream — this one goes, and the others wait for nothing.
   */
  function beforeForward(
    req: IncomingMessage,
    res: ServerResponse,
    g: RouteGhost,
  ): boolean | Promise<boolean> {
    const target = deps.targetOf(req)
    const key = keyOf(req, target, g)
    const wants = parseCacheControl(req.headers['cache-control'])
    // The request wants the origin's answer, or nothing kept of it (RFC 9111 §5.2.1, §5.4).
    if (wants.has('no-cache') || wants.has('no-store')) return false
    if (!wants.has('max-age') && req.headers.pragma === 'no-cache') return false
    const decide = (entry: GhostEntry | undefined): boolean => {
      if (entry === undefined || res.destroyed || res.headersSent) return false
      const now = Date.now()
      const age = ageMs(entry, now)
      const cc = parseCacheControl(entry.headers['cache-control'])
      const maxAge = secondsOf(wants, 'max-age')
      const minFresh = secondsOf(wants, 'min-fresh') ?? 0
      const fresh =
        age < entry.lifetimeMs && !cc.has('no-cache') && (maxAge === undefined || age <= maxAge * 1000)
      if (g.settings.serveFresh && fresh && entry.lifetimeMs - age >= minFresh * 1000) {
        // Close to its end: this request refreshes it (one at a time), the others are answered.
        if (entry.lifetimeMs - age <= g.settings.refreshAhead * 1000 && !fetching.has(key)) {
          fetches(res, key)
          return false
        }
        answer(req, res, entry, { kind: 'fresh', now, clear: false })
        metrics?.served(g.name, 'fresh', ageOf(entry, now))
        return true
      }
      const window = (secondsOf(cc, 'stale-while-revalidate') ?? g.settings.staleWhileRevalidate) * 1000
      const updating =
        !fresh &&
        window > 0 &&
        age < entry.lifetimeMs + window &&
        entry.expiresAt > now &&
        (!entry.staleForbidden || g.settings.ignoreRevalidate)
      if (updating && fetching.has(key)) {
        answer(req, res, entry, { kind: 'stale-while-revalidate', now, clear: false })
        metrics?.served(g.name, 'updating', ageOf(entry, now))
        return true
      }
      // This request refreshes the key; the others get the stale entry until its answer is over.
      if (updating) fetches(res, key)
      if (g.settings.serveFresh && entry.expiresAt > now) revalidate(req, key, entry)
      return false
    }
    const found = lookup(key, req.headers)
    return found instanceof Promise ? found.then(decide) : decide(found)
  }

  /**
   * Send a stale entry's validator with the request (RFC 9111 §4.3.1), unless the client
   * sent its own or asks for a range: a 304 then refreshes the entry (`replace`).
   */
  function revalidate(req: IncomingMessage, key: string, entry: GhostEntry): void {
    const h = req.headers
    if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h.range !== undefined)
      return
    const etag = entry.headers.etag
    const modified = entry.headers['last-modified']
    const [field, value] =
      typeof etag === 'string'
        ? (['if-none-match', etag] as const)
        : typeof modified === 'string'
          ? (['if-modified-since', modified] as const)
          : []
    if (field === undefined) return
    // The gateway forwards the raw fields (their order and case kept): the validator goes there too.
    h[field] = value
    req.rawHeaders.push(field, value)
    revalidating.set(req, { key, entry, field })
  }

  /**
   * The upstream's 304 to a revalidation the ghost asked for: the entry takes the 304's
   * fields and a new freshness (RFC 9111 §4.3.4), and the client, which asked for no
   * validation, gets the whole answer.
   */
  function revalidated(
    req: IncomingMessage,
    res: ServerResponse,
    headers: IncomingHttpHeaders,
    g: RouteGhost,
  ): boolean {
    const asked = revalidating.get(req)
    if (asked === undefined) return false
    revalidating.delete(req)
    delete req.headers[asked.field]
    const now = Date.now()
    const fields = { ...asked.entry.headers, ...keptHeaders(headers, g.requestId) }
    const entry: GhostEntry = {
      ...asked.entry,
      headers: fields,
      ...timing(fields as IncomingHttpHeaders, now, g),
    }
    try {
      void Promise.resolve(store.set(asked.key, entry)).catch(() => undefined)
    } catch {
      // The entry is answered all the same; the store keeps the old one.
    }
    answer(req, res, entry, { kind: 'revalidated', now, clear: false })
    metrics?.served(g.name, 'revalidated', ageOf(entry, now))
    return true
  }

  return { beforeForward, revalidated, clear: () => fetching.clear() }
}
