/**
 * Circuit-breaker states shared between instances through Redis pub/sub
 * (`breaker.shared`): when one instance's breaker for an upstream opens, every
 * instance on the same store opens its own for that upstream at once, instead
 * of each paying `volumeThreshold` failed requests to learn the same thing; a
 * recovery (a probe that closed the breaker) closes them all again.
 *
 * Messages are best-effort: a lost one costs only what an unshared breaker
 * costs. Each instance ignores its own messages; a state applied from a
 * message is not published again.
 */
import { randomUUID } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import type { Logger } from '../options/index.js'
import type { RedisConnection } from '../store/index.js'

export type SharedBreakerState = 'open' | 'closed'

export interface BreakerBus {
  /** Tell the other instances that this upstream's breaker on `route` changed. */
  publish(route: string, upstream: string, state: SharedBreakerState): void
  /** Apply the other instances' changes for this upstream on `route`. */
  subscribe(route: string, upstream: string, apply: (state: SharedBreakerState) => void): void
  close(): Promise<void>
}

interface Message {
  readonly from: string
  readonly route: string
  readonly upstream: string
  readonly state: SharedBreakerState
}

const keyOf = (route: string, upstream: string): string => `${route}\n${upstream}`

/**
 * The bus on Aegis' Redis connection. The subscription gets a connection of its
 * own (Redis reserves a subscribed connection for messages), opened on the
 * first `subscribe`; ioredis subscribes again after a reconnect.
 *
 * @example
 * const bus = createBreakerBus(store, logger)
 * bus.subscribe('/api', 'http://10.0.0.5:8080', (state) => (state === 'open' ? b.open() : b.close()))
 */
export function createBreakerBus(conn: RedisConnection, logger: Logger | undefined): BreakerBus {
  const id = randomUUID()
  const channel = `${conn.prefix}breaker`
  const handlers = new Map<string, (state: SharedBreakerState) => void>()
  let subscriber: Redis | Cluster | undefined

  const onMessage = (from: string, text: string): void => {
    if (from !== channel) return
    let m: Partial<Message>
    try {
      m = JSON.parse(text) as Partial<Message>
    } catch {
      return
    }
    if (m.from === id || typeof m.route !== 'string' || typeof m.upstream !== 'string') return
    if (m.state !== 'open' && m.state !== 'closed') return
    handlers.get(keyOf(m.route, m.upstream))?.(m.state)
  }

  return {
    publish(route, upstream, state) {
      if (!conn.up) return
      const message: Message = { from: id, route, upstream, state }
      conn.client.publish(channel, JSON.stringify(message)).catch((err: unknown) => {
        logger?.debug?.({ err, route, upstream }, 'breaker state not shared')
      })
    },
    subscribe(route, upstream, apply) {
      handlers.set(keyOf(route, upstream), apply)
      if (subscriber !== undefined) return
      // Queue the SUBSCRIBE until connected (the request path's connection never queues).
      subscriber = conn.isCluster
        ? (conn.client as Cluster).duplicate([], { enableOfflineQueue: true })
        : (conn.client as Redis).duplicate({ enableOfflineQueue: true })
      subscriber.on('message', onMessage)
      subscriber.on('error', () => undefined) // the store's own connection reports outages
      subscriber.subscribe(channel).catch((err: unknown) => {
        logger?.warn({ err }, 'breaker states will not be shared: subscribing failed')
      })
    },
    async close() {
      handlers.clear()
      const s = subscriber
      subscriber = undefined
      if (s !== undefined) await s.quit().catch(() => s.disconnect())
    },
  }
}
