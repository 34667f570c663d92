/**
 * Security events — a request the limiter refused, a client the anomaly engine blocked —
 * come by the thousand in an attack. The trail keeps one entry per minute, client and
 * reason with its count, written when the minute is over, so an attack costs the trail
 * a bounded number of entries: at most `maxClients` clients a minute get their own;
 * the others are counted together under client `*` (with how many they were).
 */
import type { TypedEvent } from '../kernel/events.js'
import { toAuditData } from './redact.js'

/** The event types counted per minute instead of recorded one by one. */
export const SECURITY_EVENTS = ['limiter.blocked', 'anomaly.blocked'] as const
export type SecurityType = (typeof SECURITY_EVENTS)[number]

/** What a security entry holds (data contract version 1): one minute of one client's refusals for one reason. */
export interface SecurityCount {
  /** The client's key (`*`: the clients past `security.maxClients` that minute). */
  readonly client: string
  /** `limited:<policy>`, `banned:<policy>`, `denied` (limiter); the first reason of a block (anomaly). */
  readonly reason: string
  readonly count: number
  /** The minute (its start, ISO 8601). */
  readonly minute: string
  /** The first and last of them (ISO 8601). */
  readonly firstAt: string
  readonly lastAt: string
  /** The route (the path, for the limiter) that took most of them. */
  readonly route?: string
  /** For client `*`: how many clients were counted together. */
  readonly clients?: number
  /** The first event of the minute, as the bus carried it (redacted). */
  readonly sample: Readonly<Record<string, unknown>>
}

const MINUTE = 60_000
const MAX_ROUTES = 16

interface Bucket {
  readonly type: SecurityType
  readonly client: string
  readonly reason: string
  count: number
  readonly firstAt: number
  lastAt: number
  readonly routes: Map<string, number>
  readonly sample: unknown
  /** For the overflow bucket: the clients folded into it. */
  clients?: Set<string> | number
}

const keyOf = (
  e: TypedEvent<SecurityType>,
): { client: string; reason: string; route: string | undefined } => {
  if (e.type === 'limiter.blocked') {
    const policy = e.policies.length === 0 ? '' : `:${e.policies.join('+')}`
    return { client: e.client, reason: `${e.reason}${e.reason === 'denied' ? '' : policy}`, route: e.path }
  }
  return { client: e.client ?? e.key, reason: e.reasons[0] ?? 'anomaly', route: undefined }
}

export interface Aggregator {
  add(event: TypedEvent<SecurityType>, now: number): void
  /** Close every minute that is over by `now` (all of them with `Infinity`): the entries, oldest first. */
  drain(now: number): { type: SecurityType; data: SecurityCount }[]
  /** When the oldest open minute is over (`undefined`: none open). */
  readonly nextEnd: number | undefined
  /** Buckets open. */
  readonly size: number
}

/**
 * Count security events per minute, client and reason.
 *
 * @example
 * const agg = createAggregator(1_000)
 * agg.add({ type: 'limiter.blocked', client: '203.0.113.7', reason: 'limited', policies: ['global'], status: 429, path: '/' }, Date.now())
 * agg.drain(Date.now() + 60_000) // [{ type: 'limiter.blocked', data: { client: '203.0.113.7', count: 1, … } }]
 */
export function createAggregator(maxClients: number): Aggregator {
  // Minute start → bucket key → bucket; Maps keep insertion order, so entries come out as they began.
  const minutes = new Map<number, { buckets: Map<string, Bucket>; clients: Set<string> }>()
  let size = 0

  return {
    add(event, now) {
      const start = now - (now % MINUTE)
      let m = minutes.get(start)
      if (m === undefined) {
        m = { buckets: new Map(), clients: new Set() }
        minutes.set(start, m)
      }
      const { client, reason, route } = keyOf(event)
      const own = m.clients.has(client) || m.clients.size < maxClients
      if (own) m.clients.add(client)
      const key = `${event.type}\0${own ? client : '*'}\0${reason}`
      let b = m.buckets.get(key)
      if (b === undefined) {
        b = {
          type: event.type,
          client: own ? client : '*',
          reason,
          count: 0,
          firstAt: now,
          lastAt: now,
          routes: new Map(),
          sample: event,
          ...(own ? {} : { clients: new Set<string>() }),
        }
        m.buckets.set(key, b)
        size++
      }
      b.count++
      b.lastAt = now
      if (route !== undefined && (b.routes.has(route) || b.routes.size < MAX_ROUTES))
        b.routes.set(route, (b.routes.get(route) ?? 0) + 1)
      // The overflow bucket counts its clients exactly up to a bound, then only grows its count.
      if (!own && b.clients instanceof Set) {
        b.clients.add(client)
        if (b.clients.size >= 100_000) b.clients = b.clients.size
      }
    },
    drain(now) {
      const out: { type: SecurityType; data: SecurityCount }[] = []
      for (const [start, m] of minutes) {
        if (start + MINUTE > now) break
        minutes.delete(start)
        for (const b of m.buckets.values()) {
          size--
          let route: string | undefined
          let most = 0
          for (const [r, n] of b.routes)
            if (n > most) {
              most = n
              route = r
            }
          const sample: Record<string, unknown> = { ...(b.sample as Record<string, unknown>) }
          delete sample.type
          const data: SecurityCount = {
            client: b.client,
            reason: b.reason,
            count: b.count,
            minute: new Date(start).toISOString(),
            firstAt: new Date(b.firstAt).toISOString(),
            lastAt: new Date(b.lastAt).toISOString(),
            ...(route === undefined ? {} : { route }),
            ...(b.clients === undefined
              ? {}
              : { clients: typeof b.clients === 'number' ? b.clients : b.clients.size }),
            sample: toAuditData(sample) as Record<string, unknown>,
          }
          out.push({ type: b.type, data })
        }
      }
      return out
    },
    get nextEnd() {
      for (const start of minutes.keys()) return start + MINUTE
      return undefined
    },
    get size() {
      return size
    },
  }
}
