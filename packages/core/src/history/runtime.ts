/**
 * The process' and Redis' own numbers, sampled on the history's clock: event-loop
 * delay (`monitorEventLoopDelay`), heap, RSS, CPU (a `cpuUsage()` delta over the
 * wall-clock time between samples), uptime; and Redis' `INFO` (memory, ops/s,
 * clients, keyspace hits and misses), per node on a Redis Cluster.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { Cluster, Redis } from 'ioredis'
import type { RedisConnection } from '../store/index.js'
import { HISTORY_VERSION } from './query.js'

/** The process now, as `history.runtime()` answers it. */
export interface RuntimeStats {
  readonly version: typeof HISTORY_VERSION
  readonly instance: string
  /** When sampled, ms since the epoch (the history's clock). */
  readonly time: number
  readonly pid: number
  readonly node: string
  /** Seconds since the process started. */
  readonly uptime: number
  /** Event-loop delay over the last sample's interval, in ms (`null` before the first). */
  readonly eventLoop: {
    readonly mean: number | null
    readonly max: number | null
    readonly p99: number | null
  }
  readonly heap: { readonly used: number; readonly total: number }
  /** Resident set size, in bytes. */
  readonly rss: number
  /** CPU used over the last sample's interval, in percent of one core (`null` before the first). */
  readonly cpu: number | null
}

/**
 * Samples the process: each `sample()` covers the time since the one before.
 *
 * @example
 * const s = runtimeSampler('web-1:42', Date.now); s.sample()
 */
export function runtimeSampler(instance: string, clock: () => number) {
  let loop: IntervalHistogram | undefined
  try {
    loop = monitorEventLoopDelay({ resolution: 10 })
    loop.enable()
  } catch {
    loop = undefined
  }
  let cpuAt = process.cpuUsage()
  let wallAt = performance.now()
  let last: RuntimeStats | undefined
  const ms = (ns: number): number | null => (Number.isFinite(ns) && ns > 0 ? ns / 1e6 : null)
  return {
    sample(): RuntimeStats {
      const mem = process.memoryUsage()
      const wall = performance.now()
      const cpu = process.cpuUsage(cpuAt)
      const elapsed = (wall - wallAt) * 1000
      cpuAt = process.cpuUsage()
      wallAt = wall
      const eventLoop =
        loop === undefined || loop.count === 0
          ? { mean: null, max: null, p99: null }
          : { mean: ms(loop.mean), max: ms(loop.max), p99: ms(loop.percentile(99)) }
      loop?.reset()
      let time: number
      try {
        time = clock()
      } catch {
        time = Date.now()
      }
      last = {
        version: HISTORY_VERSION,
        instance,
        time,
        pid: process.pid,
        node: process.version,
        uptime: process.uptime(),
        eventLoop,
        heap: { used: mem.heapUsed, total: mem.heapTotal },
        rss: mem.rss,
        cpu: elapsed > 0 ? ((cpu.user + cpu.system) / elapsed) * 100 : null,
      }
      return last
    },
    /** The last sample (one taken now if there was none). */
    last(): RuntimeStats {
      return last ?? this.sample()
    },
    close(): void {
      loop?.disable()
    },
  }
}

/** One Redis node's `INFO`, as `history.redis()` answers it. */
export interface RedisNodeStats {
  /** `host:port`. */
  readonly node: string
  readonly usedMemory: number
  readonly opsPerSecond: number
  readonly connectedClients: number
  readonly keyspaceHits: number
  readonly keyspaceMisses: number
  /** Hits and misses a second since the sample before (`null` on the first). */
  readonly hitsPerSecond: number | null
  readonly missesPerSecond: number | null
  readonly version: string
  readonly uptime: number
}

/** Redis now, as `history.redis()` answers it. */
export interface RedisStats {
  readonly version: typeof HISTORY_VERSION
  readonly time: number
  readonly mode: 'single' | 'cluster'
  /** Whether every node answered. */
  readonly up: boolean
  readonly nodes: RedisNodeStats[]
  /** Sums over the nodes (masters on a cluster); `null` when none answered. */
  readonly total: Omit<RedisNodeStats, 'node' | 'version' | 'uptime'> | null
}

/** `INFO`'s `key:value` lines. */
export function parseInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>()
  for (const line of text.split('\n')) {
    const i = line.indexOf(':')
    if (i > 0 && !line.startsWith('#')) fields.set(line.slice(0, i), line.slice(i + 1).trim())
  }
  return fields
}

const numberOf = (f: Map<string, string>, key: string): number => {
  const n = Number(f.get(key))
  return Number.isFinite(n) ? n : 0
}

/**
 * Reads `INFO` from every node (the masters of a cluster), each bounded by the store's command timeout.
 *
 * @example
 * const stats = await redisSampler(conn, Date.now).sample()
 */
export function redisSampler(conn: RedisConnection, clock: () => number) {
  const before = new Map<string, { at: number; hits: number; misses: number }>()
  const timeout = Math.max(conn.commandTimeout, 100)
  const info = (client: Redis): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('INFO timed out')), timeout)
      client.info().then(
        (text) => {
          clearTimeout(timer)
          resolve(text)
        },
        (err: unknown) => {
          clearTimeout(timer)
          reject(err instanceof Error ? err : new Error(String(err)))
        },
      )
    })
  return {
    /** Never rejects: a node that does not answer is left out (`up: false`). */
    async sample(): Promise<RedisStats> {
      let time: number
      try {
        time = clock()
      } catch {
        time = Date.now()
      }
      const client = conn.client as unknown as Redis | Cluster
      let clients: Redis[] = []
      try {
        clients = conn.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
      } catch {
        clients = []
      }
      const now = performance.now()
      const answers = await Promise.all(
        clients.map(async (c): Promise<RedisNodeStats | undefined> => {
          if (!conn.up) return undefined
          try {
            const f = parseInfo(await info(c))
            const node = `${c.options.host ?? '127.0.0.1'}:${c.options.port ?? 6379}`
            const hits = numberOf(f, 'keyspace_hits')
            const misses = numberOf(f, 'keyspace_misses')
            const prev = before.get(node)
            before.set(node, { at: now, hits, misses })
            const secs = prev === undefined ? 0 : (now - prev.at) / 1000
            const rate = (n: number, was: number | undefined): number | null =>
              was === undefined || secs <= 0 || n < was ? null : (n - was) / secs
            return {
              node,
              usedMemory: numberOf(f, 'used_memory'),
              opsPerSecond: numberOf(f, 'instantaneous_ops_per_sec'),
              connectedClients: numberOf(f, 'connected_clients'),
              keyspaceHits: hits,
              keyspaceMisses: misses,
              hitsPerSecond: rate(hits, prev?.hits),
              missesPerSecond: rate(misses, prev?.misses),
              version: f.get('redis_version') ?? '',
              uptime: numberOf(f, 'uptime_in_seconds'),
            }
          } catch {
            return undefined
          }
        }),
      )
      const nodes = answers.filter((n): n is RedisNodeStats => n !== undefined)
      const sum = (pick: (n: RedisNodeStats) => number | null): number | null =>
        nodes.some((n) => pick(n) === null) ? null : nodes.reduce((s, n) => s + (pick(n) as number), 0)
      return {
        version: HISTORY_VERSION,
        time,
        mode: conn.isCluster ? 'cluster' : 'single',
        up: nodes.length > 0 && nodes.length === clients.length,
        nodes,
        total:
          nodes.length === 0
            ? null
            : {
                usedMemory: sum((n) => n.usedMemory) as number,
                opsPerSecond: sum((n) => n.opsPerSecond) as number,
                connectedClients: sum((n) => n.connectedClients) as number,
                keyspaceHits: sum((n) => n.keyspaceHits) as number,
                keyspaceMisses: sum((n) => n.keyspaceMisses) as number,
                hitsPerSecond: sum((n) => n.hitsPerSecond),
                missesPerSecond: sum((n) => n.missesPerSecond),
              },
      }
    },
  }
}
