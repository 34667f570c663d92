/**
 * The metrics history as an engine: every response it observes, every rejection counted,
 * every upstream exchange and the bus' events (breakers, ghost serves, anomaly verdicts)
 * go into the open second of the tiers (recorder.ts) — a clock read and a few additions,
 * nothing allocated. One unref'd timer samples the runtime and Redis and sends the
 * minutes to Redis; `close()` stops it after a last flush.
 *
 * `aegis.history` answers the admin API and the dashboard: `query()` over 10 minutes to
 * 7 days, `live()` and `onSecond()` for a live feed, `runtime()` and `redis()` now.
 * Every shape carries `version: 1` (docs/operations.md, "Metrics history").
 */
import { hostname } from 'node:os'
import type { Engine } from '../kernel/engine.js'
import type { EventBus, Unsubscribe } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import type { RedisConnection } from '../store/index.js'
import { C, Layout, V } from './layout.js'
import type { HistorySettings } from './options.js'
import {
  fillLocal,
  plan,
  Points,
  secondOf,
  unpack,
  type HistoryQuery,
  type HistoryResult,
  type HistorySecond,
} from './query.js'
import { Recorder } from './recorder.js'
import { redisSampler, runtimeSampler, type RedisStats, type RuntimeStats } from './runtime.js'
import { historyShare, type PackedMinute } from './shared.js'
import { packRow } from './query.js'

/** An instance that wrote to the shared store, as `history.instances()` lists it. */
export interface HistoryInstance {
  readonly instance: string
  /** Its last write, ms since the epoch (its history's clock). */
  readonly lastSeen: number
}

/** The metrics history's entry points (`aegis.history`). */
export interface HistoryApi {
  /** This instance's name among those sharing the store. */
  readonly instance: string
  /**
   * Points over a range (`'10m'`, `'30m'`, `'6h'`, `'24h'`, `'7d'`, or `from`/`to`), for
   * this instance or merged over every instance that shares the store (`merge: true`).
   * Rejects with `AegisArgumentError` on a bad query; never because Redis is down
   * (`complete: false` then).
   */
  query(query?: HistoryQuery): Promise<HistoryResult>
  /** The last `seconds` (default 60, at most the ring's) of this instance, a point a second. */
  live(seconds?: number): HistoryResult
  /**
   * Each second of this instance as it closes (a live feed's 1 s batches). Listeners run
   * synchronously, from the first event of the next second or the sampling timer; one
   * that throws is logged and kept.
   */
  onSecond(listener: (second: HistorySecond) => void): Unsubscribe
  /** The process now: event-loop delay, heap, RSS, CPU, uptime. */
  runtime(): RuntimeStats
  /** Redis' `INFO` now (every master of a cluster), or `undefined` without a store. Never rejects. */
  redis(): Promise<RedisStats | undefined>
  /** The instances that wrote to the shared store within the retention, most recent first. Never rejects. */
  instances(): Promise<HistoryInstance[]>
  /** Send the minutes not yet in Redis now: `false` when not shared, Redis is down or the write failed. */
  flush(): Promise<boolean>
}

/** What the history engine is built from. */
export interface HistoryDeps {
  readonly events: EventBus
  readonly store: RedisConnection | undefined
  readonly logger: Logger | undefined
}

/** What the history adds to an engine: the rejections the pipeline counts and the gateway's exchanges. */
export type HistoryEngine = Engine & { readonly api: HistoryApi }

/**
 * @example
 * const engine = historyEngine(historySchema.parse({}), { events, store: undefined, logger })
 */
export function historyEngine(config: HistorySettings, deps: HistoryDeps): HistoryEngine {
  const { events, logger } = deps
  const clock = config.clock ?? Date.now
  const instance = config.instance ?? `${hostname()}:${process.pid}`
  const layout = new Layout(config.buckets)
  const rec = new Recorder(layout, config.seconds, config.days, clock)
  const scratch = new Float64Array(layout.width)
  // Covered from now on, quiet or not.
  rec.tick()
  const conn = config.shared ? deps.store : undefined
  const share = conn === undefined ? undefined : historyShare(conn, instance, config.days)
  const runtime = runtimeSampler(instance, clock)
  const redisStats = deps.store === undefined ? undefined : redisSampler(deps.store, clock)
  const safeNow = (): number => {
    try {
      const t = clock()
      return Number.isFinite(t) ? t : Date.now()
    } catch {
      return Date.now()
    }
  }

  const listeners = new Set<(second: HistorySecond) => void>()
  const deliver = (second: number, row: { array: Float64Array; offset: number }): void => {
    const s = secondOf(rec, instance, second, row.array, row.offset)
    for (const listener of listeners) {
      try {
        listener(s)
      } catch (err) {
        logger?.error({ err }, 'history listener failed')
      }
    }
  }

  const offs: Unsubscribe[] = [
    events.on('upstream.breaker', (e) => {
      if (e.origin !== 'local') return
      rec.count(
        e.state === 'open' ? C.breakerOpen : e.state === 'half-open' ? C.breakerHalfOpen : C.breakerClosed,
      )
    }),
    events.on('ghost.served', () => rec.count(C.ghostServed)),
    events.on('anomaly.flagged', () => rec.count(C.anomalyFlagged)),
    // Another instance's block is counted there.
    events.on('anomaly.blocked', (e) => {
      if (e.shared !== true) rec.count(C.anomalyBlocked)
    }),
  ]

  // The first minute not yet final in Redis.
  let pending = Math.floor(safeNow() / 60_000)
  let flushing: Promise<boolean> | undefined
  let closed = false
  async function flushNow(): Promise<boolean> {
    if (share === undefined || conn === undefined || !conn.up) return false
    const now = safeNow()
    rec.advance(Math.floor(now / 1000))
    const current = Math.floor(rec.open / 60)
    let from = Math.max(pending, current - config.maxBacklog)
    try {
      while (from <= current) {
        const last = Math.min(current, from + share.slice - 1)
        const minutes: PackedMinute[] = []
        for (let m = from; m <= last; m++) {
          const row = rec.minuteRow(m)
          if (row !== undefined && (row.array[row.offset] as number) > 0)
            minutes.push({ minute: m, json: packRow(rec, row.array, row.offset) })
        }
        if (minutes.length > 0) await share.write(minutes, now)
        // The open minute goes out again, whole, once it is over.
        pending = from = Math.min(last + 1, current)
        if (last === current) break
      }
      return true
    } catch (err) {
      conn.fail(err)
      return false
    }
  }
  const flush = (): Promise<boolean> => {
    if (closed) return Promise.resolve(false)
    flushing ??= flushNow().finally(() => {
      flushing = undefined
    })
    return flushing
  }

  // Epoch ms minus `performance.now()`: kept in step with the wall clock by the timer and the queries.
  let epochOffset = Date.now() - performance.now()
  const resync = (): void => {
    epochOffset = Date.now() - performance.now()
  }
  const sampleRuntime = (): void => {
    resync()
    const s = runtime.sample()
    rec.tick()
    if (s.eventLoop.mean !== null) rec.sample(V.loopDelay, s.eventLoop.mean)
    if (s.eventLoop.max !== null) rec.sample(V.loopDelayMax, s.eventLoop.max)
    rec.sample(V.heapUsed, s.heap.used)
    rec.sample(V.heapTotal, s.heap.total)
    rec.sample(V.rss, s.rss)
    if (s.cpu !== null) rec.sample(V.cpu, s.cpu)
  }
  const sampleRedis = async (): Promise<RedisStats | undefined> => {
    if (redisStats === undefined) return undefined
    const stats = await redisStats.sample()
    const t = stats.total
    if (t !== null) {
      rec.sample(V.redisMemory, t.usedMemory)
      rec.sample(V.redisOps, t.opsPerSecond)
      rec.sample(V.redisClients, t.connectedClients)
      if (t.hitsPerSecond !== null) rec.sample(V.redisHits, t.hitsPerSecond)
      if (t.missesPerSecond !== null) rec.sample(V.redisMisses, t.missesPerSecond)
    }
    return stats
  }

  let lastFlush = performance.now()
  const timer =
    config.sampleMs === 0
      ? undefined
      : setInterval(() => {
          try {
            sampleRuntime()
            if (performance.now() - lastFlush >= config.flushMs) {
              lastFlush = performance.now()
              void sampleRedis()
                .catch(() => undefined)
                .then(flush)
            }
          } catch (err) {
            logger?.error({ err }, 'history sampling failed')
          }
        }, config.sampleMs)
  timer?.unref()

  const api: HistoryApi = {
    instance,
    async query(query) {
      resync()
      const now = safeNow()
      rec.advance(Math.floor(now / 1000))
      const p = plan(query, now, config.seconds)
      const pts = new Points(p, config.buckets)
      pts.instances.push(instance)
      fillLocal(pts, rec, scratch)
      if (!p.merge) return pts.result('local')
      if (share === undefined || conn === undefined || !conn.up) {
        pts.complete = share === undefined
        return pts.result('merged')
      }
      const first = Math.floor(p.from / 60_000)
      const last = Math.floor((p.from + p.points * p.step - 1) / 60_000)
      try {
        const others = await share.instances(p.from)
        const read = await Promise.all(
          others.map(async (name) => [name, await share.read(name, first, last)] as const),
        )
        for (const [name, minutes] of read) {
          let any = false
          for (const [m, json] of minutes) {
            const packed = unpack(json)
            const i = pts.pointOf(m * 60_000)
            if (packed === undefined || i < 0) continue
            pts.addPacked(i, packed)
            any = true
          }
          if (any) pts.instances.push(name)
        }
      } catch (err) {
        conn.fail(err)
        pts.complete = false
      }
      return pts.result('merged')
    },
    live(seconds = 60) {
      const now = safeNow()
      rec.advance(Math.floor(now / 1000))
      const n = Math.max(1, Math.min(Math.floor(Number(seconds) || 60), config.seconds))
      const end = (rec.open + 1) * 1000
      const pts = new Points(
        { ...plan({ from: end - n * 1000, to: end, step: 1000 }, now, config.seconds), range: 'live' },
        config.buckets,
      )
      pts.instances.push(instance)
      fillLocal(pts, rec, scratch)
      return pts.result('local')
    },
    onSecond(listener) {
      listeners.add(listener)
      rec.onSealed = deliver
      let done = false
      return () => {
        if (done) return
        done = true
        listeners.delete(listener)
        if (listeners.size === 0) rec.onSealed = undefined
      }
    },
    runtime: () => runtime.sample(),
    redis: () => sampleRedis().catch(() => undefined),
    async instances() {
      if (share === undefined || conn === undefined || !conn.up) return []
      try {
        const client = conn.client as unknown as { zrevrangebyscore(...a: unknown[]): Promise<string[]> }
        const flat = await client.zrevrangebyscore(
          share.index,
          '+inf',
          '-inf',
          'WITHSCORES',
          'LIMIT',
          0,
          1000,
        )
        const out: HistoryInstance[] = []
        for (let i = 0; i + 1 < flat.length; i += 2)
          out.push({ instance: flat[i] as string, lastSeen: Number(flat[i + 1]) })
        return out
      } catch (err) {
        conn.fail(err)
        return []
      }
    },
    flush,
  }

  return {
    name: 'history',
    api,
    observe(_req, state, seen) {
      // On the real clock, the time is the admission's monotonic stamp plus the latency: no clock read.
      if (config.clock === undefined)
        rec.request(seen.status, seen.ms, epochOffset + state.startedAt + seen.ms)
      else rec.request(seen.status, seen.ms)
    },
    rejected(reason) {
      rec.rejected(reason)
    },
    upstream: {
      settled(_route, outcome, ms) {
        rec.upstream(outcome, ms)
      },
    },
    async close() {
      if (timer !== undefined) clearInterval(timer)
      for (const off of offs) off()
      listeners.clear()
      rec.onSealed = undefined
      runtime.close()
      // A last flush, so that the merged history has this instance's last minute.
      await flush().catch(() => false)
      closed = true
    },
  }
}
