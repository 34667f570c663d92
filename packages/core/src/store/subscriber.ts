/**
 * A connection for pub/sub beside Aegis' own: Redis reserves a subscribed connection for
 * messages, and unlike the request path's it may wait for Redis (no command timeout, an
 * offline queue, no retry limit), since nothing waits on it. ioredis subscribes again by
 * itself after a reconnect. Used by the buses that share breaker states and anomaly verdicts.
 */
import type { Cluster, Redis, RedisOptions } from 'ioredis'
import type { RedisConnection } from './index.js'

/**
 * @example
 * const s = subscriberFor(conn)
 * s.on('message', onMessage)
 * s.on('ready', () => void s.subscribe(channel))
 */
export function subscriberFor(conn: RedisConnection): Redis | Cluster {
  // `commandTimeout: undefined` removes the store's timeout from the copied options.
  const waiting = {
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    commandTimeout: undefined,
  } as unknown as Partial<RedisOptions>
  return conn.isCluster
    ? (conn.client as Cluster).duplicate([], {
        enableOfflineQueue: true,
        redisOptions: { ...(conn.client as Cluster).options.redisOptions, ...waiting },
      } as unknown as Parameters<Cluster['duplicate']>[1])
    : (conn.client as Redis).duplicate(waiting)
}
