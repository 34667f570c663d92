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
import type { Logger } from '../kernel/logger.js'
import type { RedisConnection } from '../store/index.js'
import { subscriberFor } from '../store/subscriber.js'
import type { Breaker } from './index.js'

export type SharedBreakerState = 'open' | 'closed'

export interface BreakerBus {
  /** Tell the other instances that this upstream's breaker on `route` changed. */
  publish(route: string, upstream: string, state: SharedBreakerState): void
  /** Apply the other instances' changes for this upstream on `route`; returns the unsubscribe. */
  subscribe(route: string, upstream: string, apply: (state: SharedBreakerState) => void): () => void
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
 * bus.subscribe('/api', 'http://10.0.0.5:8080', (state) => breaker.force(state))
 */
export function createBreakerBus(conn: RedisConnection, logger: Logger | undefined): BreakerBus {
  const id = randomUUID()
  const channel = `${conn.prefix}breaker`
  // Routes may share a name (it defaults to the prefix): every one of them applies the change.
  const handlers = new Map<string, Set<(state: SharedBreakerState) => void>>()
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
    const state = m.state
    for (const apply of handlers.get(keyOf(m.route, m.upstream)) ?? []) apply(state)
  }

  /**
   * The subscriber: unlike the request path's connection it may wait for Redis
   * (no command timeout, no retry limit), and it subscribes on every `ready`
   * until that succeeds once; ioredis then subscribes again after reconnects.
   */
  const listen = (): Redis | Cluster => {
    const s = subscriberFor(conn)
    let subscribed = false
    const subscribe = (): void => {
      if (subscribed) return
      s.subscribe(channel).then(
        () => (subscribed = true),
        (err: unknown) => logger?.warn({ err }, 'breaker states not shared yet: subscribing failed'),
      )
    }
    s.on('message', onMessage)
    s.on('ready', subscribe)
    s.on('error', () => undefined) // the store's own connection reports outages
    return s
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
      const key = keyOf(route, upstream)
      const set = handlers.get(key) ?? new Set()
      handlers.set(key, set.add(apply))
      if (subscriber === undefined) subscriber = listen()
      return () => {
        set.delete(apply)
        if (set.size === 0) handlers.delete(key)
      }
    },
    async close() {
      handlers.clear()
      const s = subscriber
      subscriber = undefined
      if (s === undefined) return
      // QUIT waits for Redis: only when it is there to answer.
      if (s.status === 'ready') await s.quit().catch(() => s.disconnect())
      else s.disconnect()
    },
  }
}

/** What sharing needs of an upstream: its identity on the bus and its breaker (the balancer's hosts). */
export interface BreakerHost {
  /** The upstream, as every instance names it (`http://10.0.0.5:8080`). */
  readonly id: string
  readonly breaker: Breaker | undefined
}

/** One route's side of the bus. */
export interface BreakerSharing {
  /**
   * Every breaker state change of one of the route's hosts (the balancer's
   * event). Returns `'peer'` for a change applied from another instance's message.
   */
  changed(host: BreakerHost, state: SharedBreakerState | 'half-open'): 'local' | 'peer'
  close(): void
}

/**
 * Publish the route's breaker changes and apply the other instances'. A change
 * applied from the bus is not published again. After another instance closed
 * a breaker, the failures still in this instance's window would re-open it on
 * the next one and re-open every instance with it (a fleet flapping each
 * `resetTimeout`): such an open stays local for one window, unless it is a
 * probe of ours that failed.
 *
 * @example
 * const sharing = shareBreakers(bus, 'api', balancer.hosts, 10_000)
 * // in the balancer's breaker event: sharing.changed(host, state)
 */
export function shareBreakers(
  bus: BreakerBus,
  route: string,
  hosts: readonly BreakerHost[],
  windowMs: number,
): BreakerSharing {
  let applying = false
  const previous = new Map<BreakerHost, string>()
  const closedElsewhereAt = new Map<BreakerHost, number>()
  const unsubscribe = hosts.map((host) =>
    bus.subscribe(route, host.id, (state) => {
      if (state === 'closed') closedElsewhereAt.set(host, performance.now())
      applying = true
      try {
        host.breaker?.force(state)
      } finally {
        applying = false
      }
    }),
  )
  return {
    changed(host, state) {
      const before = previous.get(host)
      previous.set(host, state)
      if (applying) return 'peer'
      if (state === 'half-open') return 'local'
      const sinceClosedElsewhere = performance.now() - (closedElsewhereAt.get(host) ?? -Infinity)
      if (state !== 'open' || before === 'half-open' || sinceClosedElsewhere >= windowMs)
        bus.publish(route, host.id, state)
      return 'local'
    },
    close() {
      for (const u of unsubscribe) u()
    },
  }
}
