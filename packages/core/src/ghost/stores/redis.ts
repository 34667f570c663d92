import type { IncomingHttpHeaders } from 'node:http'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import type { Cluster, Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'
import type { RedisConnection } from '../../store/index.js'
import {
  entryBytes,
  infoOf,
  matches,
  MAX_VARIANTS,
  type GhostEntry,
  type GhostEntryInfo,
  type GhostStore,
} from '../store.js'

/** Bounds of the Redis store. */
export interface RedisStoreOptions {
  /**
   * Most URLs this instance keeps in Redis (default 10,000): past it, the least recently
   * learned of its own go (every instance bounds its own, so Redis holds at most this many
   * per instance). Without it a flood of distinct URLs would fill the Redis the limiter
   * counts in, for `maxStale`.
   */
  readonly maxEntries?: number
  /** Largest entry kept (default 1 MiB, before compression); larger ones are refused. */
  readonly maxEntryBytes?: number
  /** Bodies above this many bytes are stored deflated (default 1 KiB). */
  readonly compressAbove?: number
}

type Stored = Omit<GhostEntry, 'body'> & { readonly deflated: boolean }

/**
 * Keep one variant: a new one past `MAX_VARIANTS` replaces one picked at random (no
 * variant's age is known without decoding it; any bound keeps lookups cheap), and the key
 * lives until its last variant's `expiresAt`. KEYS[1] the base's hash; ARGV: field, value,
 * most variants, expiresAt.
 */
const SET_SCRIPT = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('HDEL', KEYS[1], redis.call('HRANDFIELD', KEYS[1]))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[4], 'GT')
redis.call('PEXPIREAT', KEYS[1], ARGV[4], 'NX')
return 1
`
const SET_COMMAND = 'aegisGhostSet'
type SetCommand = (
  key: string,
  field: string,
  value: Buffer,
  max: number,
  expiresAt: number,
) => Promise<number>

/** One variant as a hash field value: its metadata as JSON, a newline, the body (deflated above a size). */
function encode(entry: GhostEntry, compressAbove: number): Buffer {
  const deflated = entry.body.length > compressAbove
  const { body, ...meta } = entry
  const head = Buffer.from(`${JSON.stringify({ ...meta, deflated } satisfies Stored)}\n`)
  return Buffer.concat([head, deflated ? deflateRawSync(body) : body])
}

function decode(value: Buffer): GhostEntry | undefined {
  const nl = value.indexOf(0x0a)
  if (nl < 0) return undefined
  try {
    const { deflated, ...meta } = JSON.parse(value.subarray(0, nl).toString()) as Stored
    const raw = value.subarray(nl + 1)
    return { ...meta, body: deflated ? inflateRawSync(raw) : Buffer.from(raw) }
  } catch {
    return undefined // written by another version, or damaged: nothing to offer
  }
}

/**
 * Why `set` kept nothing although the entry was fine: Redis cannot take it now. A
 * rejection, not `false` (which says the entry was too large, and is counted so); one
 * instance, as an outage may refuse every answer learned.
 */
const UNAVAILABLE = new Error('Redis is unavailable: the ghost entry was not kept')

/** A lookup that got no answer within the command timeout (`timed out`: counted as a timeout). */
const TIMED_OUT = new Error('Redis command timed out (ghost lookup)')

/** A hash field per variant: its `Vary`'d values (the field names are in the entry). */
const fieldOfVariant = (vary: readonly string[], values: readonly string[]): string =>
  JSON.stringify([vary, values])

/**
 * The Redis store, shared by every instance on one Redis or Redis Cluster: one hash per
 * base key (a single key, so one slot on a Cluster), one field per variant, the key
 * expiring with its last variant's `expiresAt` (its `maxStale`). A Redis that is down or
 * slow never fails or slows a request: `get` has nothing to offer within the store's
 * command timeout (or at once while the connection says Redis is down), and `set` gives up
 * (it rejects: nothing was kept, through no fault of the entry's).
 *
 * @example
 * const store = createRedisStore(conn)
 */
export function createRedisStore(conn: RedisConnection, options: RedisStoreOptions = {}): GhostStore {
  const maxEntryBytes = options.maxEntryBytes ?? 1024 * 1024
  const compressAbove = options.compressAbove ?? 1024
  const client = conn.client as Redis | Cluster
  const keyOf = (base: string): string => `${conn.prefix}ghost:${base}`
  const commands = client as unknown as Record<string, SetCommand | undefined>
  if (commands[SET_COMMAND] === undefined)
    client.defineCommand(SET_COMMAND, { lua: SET_SCRIPT, numberOfKeys: 1 })
  const setVariant = (commands[SET_COMMAND] as SetCommand).bind(client)
  // The URLs this instance keeps, least recently learned out first: evicted ones are deleted in Redis.
  const ours = new LRUCache<string, true>({
    max: options.maxEntries ?? 10_000,
    dispose: (_value, base, reason) => {
      if (reason === 'evict') client.del(keyOf(base)).catch((err: unknown) => conn.fail(err))
    },
  })
  const failed = (err: unknown): undefined => {
    conn.fail(err)
    return undefined
  }
  const variants = async (base: string): Promise<GhostEntry[]> => {
    const all = await client.hgetallBuffer(keyOf(base))
    const now = Date.now()
    return Object.values(all)
      .map(decode)
      .filter((e): e is GhostEntry => e !== undefined && e.expiresAt > now)
  }
  /** The keys holding ghost entries, on every master of a Cluster. */
  const scan = async (match: string): Promise<string[]> => {
    const nodes = conn.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
    const keys: string[] = []
    for (const node of nodes) {
      let cursor = '0'
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', 200)
        cursor = next
        keys.push(...found)
      } while (cursor !== '0')
    }
    return keys
  }
  // A SCAN pattern matching `text` literally.
  const globEscape = (text: string): string => text.replace(/[*?[\]\\]/g, '\\$&')
  return {
    /**
     * Within one command timeout from the call, whatever happens: ioredis starts a
     * command's timeout when it sends it, and its automatic pipelines go one at a time,
     * so on a frozen Redis a lookup queued behind another would wait out two timeouts or
     * more. A process that has only begun waits for its first connection within the same
     * bound, so that an instance started while the upstream is down finds what the others
     * learned (the limiter's `startupWait` is longer: a failing request is not kept on it).
     */
    async get(base: string, headers: IncomingHttpHeaders) {
      if (!conn.starting && !conn.up) return undefined
      let sent = false
      const lookup = async (): Promise<GhostEntry | undefined> => {
        if (conn.starting) await conn.started
        if (!conn.up) return undefined
        sent = true
        return (await variants(base)).find((e) => matches(e, headers))
      }
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => {
          // Redis did not answer in time: it counts as down, as for a command's own timeout.
          if (sent) conn.fail(TIMED_OUT)
          resolve(undefined)
        }, conn.commandTimeout)
      })
      try {
        // A lookup that loses the race still settles; `race` has taken its rejection.
        return await Promise.race([lookup(), late])
      } catch (err) {
        return failed(err)
      } finally {
        clearTimeout(timer)
      }
    },
    async set(base, entry) {
      if (entryBytes(entry) > maxEntryBytes) return false
      // Off the request path: the first answers of a process are kept once it connects.
      if (conn.starting) await conn.started
      if (!conn.up) throw UNAVAILABLE
      try {
        await setVariant(
          keyOf(base),
          fieldOfVariant(entry.vary, entry.varyValues),
          encode(entry, compressAbove),
          MAX_VARIANTS,
          entry.expiresAt,
        )
        ours.set(base, true)
        return true
      } catch (err) {
        failed(err)
        throw UNAVAILABLE
      }
    },
    async delete(base) {
      ours.delete(base)
      try {
        await client.del(keyOf(base))
      } catch (err) {
        failed(err)
      }
    },
    async purge(prefix) {
      const keys = await scan(`${globEscape(`${conn.prefix}ghost:${prefix}`)}*`)
      // One key at a time: on a Cluster a DEL of several keys must stay within one slot.
      for (const key of keys) await client.del(key)
      return keys.length
    },
    async list() {
      const head = `${conn.prefix}ghost:`
      const out: GhostEntryInfo[] = []
      for (const key of await scan(`${globEscape(head)}*`)) {
        const base = key.slice(head.length)
        for (const e of await variants(base)) out.push(infoOf(base, e))
      }
      return out
    },
    async keys() {
      const head = `${conn.prefix}ghost:`
      return (await scan(`${globEscape(head)}*`)).map((key) => key.slice(head.length))
    },
    async info(base) {
      return (await variants(base)).map((e) => infoOf(base, e))
    },
    close() {
      // The connection is the instance's (store/), closed by it.
    },
  }
}
