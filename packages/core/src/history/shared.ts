/**
 * The minutes every instance adds to Redis, so that a query can merge them all.
 *
 * Each instance writes its own minutes, one hash a day — `{prefix}{history}:<instance>:<day>`,
 * field the epoch minute, value the packed minute (query.ts `packRow`) — and its name in
 * `{prefix}{history}:instances`, scored by its last write. Writing a minute again replaces
 * it (HSET): the open minute goes out with each flush and again, whole, once it is over,
 * and a flush retried after a failure counts nothing twice. The keys share one hash tag,
 * so one MULTI writes them on a Redis Cluster too; each expires `days` (and a day) after
 * its day ended.
 *
 * Redis is never in a request's way: flushes run on the background timer, fail quietly
 * (the store counts Redis down until its probe succeeds) and start again where they
 * stopped, as far back as `maxBacklog` minutes.
 */
import type { Cluster, Redis } from 'ioredis'
import type { RedisConnection } from '../store/index.js'

const DAY_MS = 86_400_000
/** Fields written per command: a flush after a long outage goes out in slices. */
const SLICE = 120
/** Instances one merged query reads at most (the most recently seen). */
export const MAX_INSTANCES = 64

/** A minute to write: its epoch minute and its packed JSON. */
export interface PackedMinute {
  readonly minute: number
  readonly json: string
}

/**
 * @example
 * const share = historyShare(conn, 'web-1:42', 7)
 * await share.write([{ minute, json }], Date.now())
 */
export function historyShare(conn: RedisConnection, instance: string, days: number) {
  const client = conn.client as unknown as Redis | Cluster
  const tag = `${conn.prefix}{history}`
  const index = `${tag}:instances`
  const dayKey = (name: string, day: number): string => `${tag}:${name}:${day}`
  const retentionMs = days * DAY_MS + DAY_MS
  return {
    index,
    dayKey,
    /** Write minutes (at most `SLICE` of them in one MULTI); rejects on failure. */
    async write(minutes: readonly PackedMinute[], now: number): Promise<void> {
      const tx = client.multi()
      const byDay = new Map<number, string[]>()
      for (const { minute, json } of minutes) {
        const day = Math.floor((minute * 60_000) / DAY_MS)
        let fields = byDay.get(day)
        if (fields === undefined) byDay.set(day, (fields = []))
        fields.push(String(minute), json)
      }
      for (const [day, fields] of byDay) {
        const key = dayKey(instance, day)
        // Relative to the history's clock (maybe a virtual one): Redis expires by its own.
        const ttl = (day + 1) * DAY_MS + retentionMs - now
        if (ttl <= 0) continue
        tx.hset(key, ...fields)
        tx.pexpire(key, ttl)
      }
      tx.zadd(index, now, instance)
      tx.zremrangebyscore(index, '-inf', now - retentionMs)
      tx.pexpire(index, retentionMs)
      const replies = await tx.exec()
      const failed = replies?.find(([err]) => err !== null)?.[0]
      if (replies === null) throw new Error('history flush aborted')
      if (failed) throw failed
    },
    slice: SLICE,
    /** The other instances that wrote since `since` (ms), most recent first. */
    async instances(since: number): Promise<string[]> {
      const names = await client.zrevrangebyscore(index, '+inf', since, 'LIMIT', 0, MAX_INSTANCES + 1)
      return names.filter((n) => n !== instance).slice(0, MAX_INSTANCES)
    },
    /** Instance `name`'s minutes from `first` to `last` (epoch minutes), packed. */
    async read(name: string, first: number, last: number): Promise<Map<number, string>> {
      const found = new Map<number, string>()
      const firstDay = Math.floor((first * 60_000) / DAY_MS)
      const lastDay = Math.floor((last * 60_000) / DAY_MS)
      await Promise.all(
        Array.from({ length: lastDay - firstDay + 1 }, async (_, i) => {
          const day = firstDay + i
          const from = Math.max(first, (day * DAY_MS) / 60_000)
          const to = Math.min(last, ((day + 1) * DAY_MS) / 60_000 - 1)
          if (to - from + 1 >= 1440) {
            const all = await client.hgetall(dayKey(name, day))
            for (const [field, json] of Object.entries(all)) {
              const m = Number(field)
              if (m >= first && m <= last) found.set(m, json)
            }
            return
          }
          const fields = Array.from({ length: to - from + 1 }, (_, k) => String(from + k))
          const values = await client.hmget(dayKey(name, day), ...fields)
          values.forEach((json, k) => {
            if (json !== null) found.set(from + k, json)
          })
        }),
      )
      return found
    },
  }
}

export type HistoryShare = ReturnType<typeof historyShare>
