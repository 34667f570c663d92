/**
 * The live feed (`GET /v1/feed`): Server-Sent Events, one `batch` a second carrying the bus'
 * events of that second and, when metrics history is on, the second's counters. What the
 * dashboard and `aegis top` read. The bus is listened to only while someone subscribes; a
 * subscriber that cannot keep up is cut off rather than let its backlog grow.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { EventBus, TypedEvent, Unsubscribe } from '../kernel/events.js'

/** Events kept per subscriber per second; the rest are counted in `dropped`. */
const MAX_EVENTS = 1000
/** A subscriber whose unsent output passes this is cut off (it reconnects, and resumes from now). */
const MAX_BACKLOG = 1024 * 1024

/** One second of the feed (version 1). */
export interface FeedBatch {
  readonly version: 1
  /** The end of the second, ms since the epoch. */
  readonly at: number
  /** The bus' events of the second, oldest first, each with its `type` and when it was seen (`at`). */
  readonly events: readonly (TypedEvent & { readonly at: number })[]
  /** Events of the second left out of this batch: past 1,000, they are counted, not sent. */
  readonly dropped: number
  /** The second's counters, when metrics history is on. */
  readonly counters?: unknown
}

interface Subscriber {
  readonly res: ServerResponse
  readonly accepts: (type: string) => boolean
  events: (TypedEvent & { at: number })[]
  dropped: number
}

/** What a subscriber asks for: every type, or those listed (`anomaly.*` for a family). */
function filter(types: string | null): (type: string) => boolean {
  if (types === null || types === '') return () => true
  const exact = new Set<string>()
  const families: string[] = []
  for (const t of types.split(',')) {
    const s = t.trim()
    if (s.endsWith('.*')) families.push(s.slice(0, -1))
    else if (s !== '') exact.add(s)
  }
  return (type) => exact.has(type) || families.some((f) => type.startsWith(f))
}

/** The feed's subscribers and its one timer. */
export interface Feed {
  /** Answer `req` with the stream; `false` when it is full (the caller answers 503). */
  open(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): boolean
  readonly size: number
  close(): void
}

/**
 * @example
 * const feed = createFeed(bus, 16, () => history?.lastSecond())
 */
export function createFeed(events: EventBus, max: number, counters?: () => unknown): Feed {
  const subscribers = new Set<Subscriber>()
  let off: Unsubscribe | undefined
  let timer: NodeJS.Timeout | undefined

  const stop = (sub: Subscriber): void => {
    if (!subscribers.delete(sub)) return
    if (subscribers.size === 0) {
      off?.()
      off = undefined
      clearInterval(timer)
      timer = undefined
    }
  }

  const flush = (): void => {
    const at = Date.now()
    let seconds: unknown
    try {
      seconds = counters?.()
    } catch {
      seconds = undefined
    }
    for (const sub of subscribers) {
      const batch: FeedBatch = {
        version: 1,
        at,
        events: sub.events,
        dropped: sub.dropped,
        ...(seconds === undefined ? {} : { counters: seconds }),
      }
      sub.events = []
      sub.dropped = 0
      if (sub.res.writableLength > MAX_BACKLOG) {
        stop(sub)
        sub.res.destroy()
        continue
      }
      let text: string
      try {
        text = `event: batch\ndata: ${JSON.stringify(batch)}\n\n`
      } catch {
        text = `event: batch\ndata: ${JSON.stringify({ version: 1, at, events: [], dropped: batch.events.length + batch.dropped })}\n\n`
      }
      sub.res.write(text)
    }
  }

  return {
    open(req, res, query) {
      if (subscribers.size >= max) return false
      const sub: Subscriber = { res, accepts: filter(query.get('types')), events: [], dropped: 0 }
      subscribers.add(sub)
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        // nginx and other buffering proxies would hold the stream back.
        'x-accel-buffering': 'no',
      })
      res.write(`retry: 2000\nevent: hello\ndata: ${JSON.stringify({ version: 1, at: Date.now() })}\n\n`)
      req.socket.setTimeout(0)
      res.on('close', () => stop(sub))
      off ??= events.onAny((event) => {
        const at = Date.now()
        for (const s of subscribers) {
          if (!s.accepts(event.type)) continue
          if (s.events.length < MAX_EVENTS) s.events.push({ ...event, at })
          else s.dropped++
        }
      })
      timer ??= setInterval(flush, 1000).unref()
      return true
    },
    get size() {
      return subscribers.size
    },
    close() {
      for (const sub of [...subscribers]) {
        stop(sub)
        sub.res.end()
      }
    },
  }
}
