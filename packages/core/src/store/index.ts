import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { ioredis } from '../dependencies.js'
import { WarningCodes } from '../kernel/errors.js'
import type { Logger } from '../options/index.js'
import { isRedisClient, type RedisClient, type StoreConfig } from './options.js'

export { storeSchema, isRedisClient } from './options.js'
export type { StoreOptions, StoreConfig, RedisClientLike, RedisClient } from './options.js'

/** Events of the shared store, for metrics. */
export interface StoreEvents {
  /** A command failed or timed out (`reason`: 'timeout', 'connection', 'error'). */
  onError?(reason: string): void
  /** Redis became unusable (`false`) or usable again (`true`). */
  onStateChange?(up: boolean): void
}

/**
 * Aegis' own connection to Redis, and whether Redis is usable right now. While it
 * is not, engines decide in memory without sending anything (no request waits);
 * a probe every `probeInterval` brings it back. Before the first connection (at
 * most `startupWait`), engines wait for `started` instead: a shared limit is not
 * decided per instance just because the process has only begun.
 */
export interface RedisConnection {
  readonly client: RedisClient
  readonly prefix: string
  readonly isCluster: boolean
  readonly commandTimeout: number
  /** True while commands are worth sending. */
  readonly up: boolean
  /** True until the first connection is made, fails, or `startupWait` elapses. */
  readonly starting: boolean
  /** Settles (never rejects) when `starting` turns false; `up` then says how it ended. */
  readonly started: Promise<void>
  /** Report a failed command: Redis counts as down until a probe succeeds. */
  fail(err: unknown): void
  /**
   * What the request path does while Redis is down, for the outage log line
   * (default `deciding in memory (insurance)`); the limiter sets it from its policies.
   */
  describeFallback(what: string): void
  close(): Promise<void>
}

// Settings that make Redis safe to sit in a request path: a bounded wait per
// command, no queue while disconnected, nothing re-sent after a reconnect (a
// replayed decrement would charge a client twice), a quick reconnect.
const SAFETY = (commandTimeout: number) => ({
  commandTimeout,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  enableAutoPipelining: true,
  retryStrategy: (times: number) => Math.min(100 * times, 1_000),
})

function clusterNodes(nodes: NonNullable<StoreConfig['cluster']>): { host: string; port: number }[] {
  return nodes.map((n) => {
    if (typeof n !== 'string') return n
    const u = new URL(n)
    return { host: u.hostname, port: Number(u.port || 6379) }
  })
}

function createClient(config: StoreConfig): RedisClient | undefined {
  const safety = SAFETY(config.commandTimeout)
  const { redis, cluster } = config
  if (isRedisClient(redis)) {
    const given = redis
    // Work on a duplicate: the user's client keeps its own settings and queue.
    if (given.isCluster === true) {
      const { enableOfflineQueue, enableAutoPipelining, ...perNode } = safety
      return (given as unknown as Cluster).duplicate([], {
        enableOfflineQueue,
        enableAutoPipelining,
        clusterRetryStrategy: safety.retryStrategy,
        redisOptions: perNode,
      })
    }
    return (given as unknown as Redis).duplicate(safety)
  }
  if (cluster !== undefined) {
    const { enableOfflineQueue, enableAutoPipelining, ...perNode } = safety
    const options: ClusterOptions = {
      enableOfflineQueue,
      enableAutoPipelining,
      clusterRetryStrategy: safety.retryStrategy,
      redisOptions: { ...(redis as RedisOptions | undefined), ...perNode },
    }
    return new (ioredis().Cluster)(clusterNodes(cluster), options as never)
  }
  if (typeof redis === 'string') return new (ioredis().Redis)(redis, safety)
  if (redis !== undefined) return new (ioredis().Redis)({ ...(redis as RedisOptions), ...safety } as never)
  return undefined
}

const reasonOf = (err: unknown): string => {
  const message = err instanceof Error ? err.message : String(err)
  if (/timed? ?out/i.test(message)) return 'timeout'
  if (/writeable|connect|closed|ECONN|EPIPE|reset|offline|Connection/i.test(message)) return 'connection'
  return 'error'
}

/**
 * Connect to the configured Redis, or return `undefined` when the store is memory.
 *
 * @example
 * const conn = connectStore(config.store, logger, { onError: (r) => errors.inc(r) })
 * if (conn?.up) await conn.client.get(`${conn.prefix}x`)
 */
export function connectStore(
  config: StoreConfig,
  logger: Logger | undefined,
  events: StoreEvents = {},
): RedisConnection | undefined {
  const client = createClient(config)
  if (client === undefined) return undefined
  const isCluster = (client as { isCluster?: boolean }).isCluster === true
  let up = false
  let closed = false
  let probing: NodeJS.Timeout | undefined
  let outageStartedAt = 0
  let lastError = ''
  let everReady = false
  let fallback = 'deciding in memory (insurance)'

  // The startup wait: decisions wait for the first connection, at most `startupWait` ms.
  let starting = config.startupWait > 0
  let endStartup: () => void = () => undefined
  const started = starting ? new Promise<void>((resolve) => (endStartup = resolve)) : Promise.resolve()
  let startupTimer: NodeJS.Timeout | undefined
  const stopStarting = (): void => {
    if (!starting) return
    starting = false
    clearTimeout(startupTimer)
    endStartup()
  }
  /** Unreachable from the start: said once, as for an outage; waiting decisions fall back. */
  const unreachable = (message: string): void => {
    if (outageStartedAt === 0) {
      outageStartedAt = Date.now()
      reportDown(message)
      events.onStateChange?.(false)
    }
    stopStarting()
  }
  if (starting) {
    startupTimer = setTimeout(() => {
      if (everReady || closed) return
      lastError ||= 'timeout'
      unreachable(
        `Redis unreachable (no connection within startupWait, ${config.startupWait} ms): ${fallback} until it answers`,
      )
    }, config.startupWait)
    startupTimer.unref()
  }

  const reportDown = (message: string): void => {
    if (logger !== undefined) logger.warn({ store: 'redis', reason: lastError }, message)
    else
      process.emitWarning(`${message} (${lastError})`, {
        code: WarningCodes.STORE_DOWN,
        type: 'AegisWarning',
      })
  }

  const setUp = (value: boolean): void => {
    if (up === value) return
    up = value
    events.onStateChange?.(value)
    if (value) {
      if (outageStartedAt > 0) {
        const seconds = ((Date.now() - outageStartedAt) / 1000).toFixed(1)
        logger?.info(
          { store: 'redis', outageSeconds: Number(seconds) },
          'Redis is back: shared limits resumed',
        )
      }
      outageStartedAt = 0
      if (probing !== undefined) clearInterval(probing)
      probing = undefined
    } else {
      outageStartedAt = Date.now()
      // Once per outage, not once per failed request.
      reportDown(`Redis unavailable: ${fallback} until it is back`)
      probing = setInterval(probe, config.probeInterval)
      probing.unref()
    }
  }

  // A write (not PING): `CLIENT PAUSE … WRITE` lets reads through but holds our scripts.
  const probeKey = `${config.prefix}probe`
  const probe = (): void => {
    if (closed || up || client.status !== 'ready') return
    client.set(probeKey, '1', 'PX', 1_000).then(
      () => setUp(true),
      () => undefined,
    )
  }

  client.on('ready', () => {
    // The first connection counts as up at once; after an outage, a probe decides.
    if (!everReady) {
      everReady = true
      setUp(true)
      stopStarting()
    } else probe()
  })
  // ioredis emits 'error' on every failed reconnect: counted by the outage, never thrown.
  client.on('error', (err: unknown) => {
    lastError = reasonOf(err)
    // A refused or broken connection ends the startup wait; a timed-out handshake (a
    // Redis that hangs) may still connect: `startupWait` bounds that.
    if (!everReady && !(starting && lastError === 'timeout'))
      unreachable(`Redis unreachable: ${fallback} until it answers`)
  })
  client.on('close', () => {
    if (!closed && up) {
      lastError = 'connection'
      setUp(false)
    }
  })

  return {
    client,
    prefix: config.prefix,
    isCluster,
    commandTimeout: config.commandTimeout,
    get up() {
      return up
    },
    get starting() {
      return starting
    },
    started,
    describeFallback(what) {
      fallback = what
    },
    fail(err) {
      const reason = reasonOf(err)
      events.onError?.(reason)
      lastError = reason
      if (up) setUp(false)
    },
    async close() {
      if (closed) return
      closed = true
      stopStarting()
      if (probing !== undefined) clearInterval(probing)
      try {
        await client.quit()
      } catch {
        client.disconnect()
      }
    },
  }
}
