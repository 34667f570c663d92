import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, inject, it, vi } from 'vitest'
import { waitForSubscribers } from '../../../test/helpers/redis.js'
import { useRedisCluster } from '../../../test/helpers/redis-cluster.js'
import { createBalancer, type BalancerConfig, type UpstreamHost } from '../src/balancer/index.js'
import { createBreakerBus, shareBreakers } from '../src/breaker/shared.js'
import { connectStore, storeSchema, type RedisConnection } from '../src/store/index.js'

const config: BalancerConfig = {
  balancer: 'round-robin',
  healthCheck: false,
  outlier: false,
  breaker: {
    errorThresholdPercentage: 50,
    volumeThreshold: 1,
    resetTimeout: 100,
    rollingCountTimeout: 10_000,
    shared: true,
  },
  slowStart: 0,
  panicThreshold: 50,
}

const closers: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** One gateway instance's view of route `api` with one upstream, sharing through a real Redis (or Cluster). */
async function instance(
  prefix: string,
  store: object = { redis: inject('redisUrl') },
): Promise<{ host: UpstreamHost; published: string[]; origins: string[]; conn: RedisConnection }> {
  const conn = connectStore(storeSchema.parse({ ...store, prefix }), undefined) as RedisConnection
  closers.push(() => conn.close())
  await vi.waitFor(() => expect(conn.up).toBe(true), { timeout: 2000 })
  const bus = createBreakerBus(conn, undefined)
  closers.push(() => bus.close())
  const published: string[] = []
  const publish = bus.publish.bind(bus)
  bus.publish = (route, upstream, state) => {
    published.push(state)
    publish(route, upstream, state)
  }
  // Each change as `changed()` tells it: `${state} ${origin}`.
  const origins: string[] = []
  const balancer = createBalancer([{ id: 'http://10.0.0.5:8080', weight: 1 }], config, {
    breaker: (h, state) => void origins.push(`${state} ${sharing.changed(h, state)}`), // events come only after construction
  })
  closers.push(() => balancer.close())
  const sharing = shareBreakers(bus, 'api', balancer.hosts, 10_000)
  closers.push(() => sharing.close())
  return { host: balancer.hosts[0] as UpstreamHost, published, origins, conn }
}

describe('breaker states shared through Redis', () => {
  it('opens and closes the other instance, never echoes, and keeps a re-open after a remote close local', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const a = await instance(prefix)
    const b = await instance(prefix)
    // Both instances listen before anything happens.
    await waitForSubscribers(a.conn.client, `${prefix}breaker`, 2)

    a.host.breaker?.force('open')
    await vi.waitFor(() => expect(b.host.breaker?.state).toBe('open'), { timeout: 2000 })
    expect(b.published).toEqual([]) // applied, not published again

    a.host.breaker?.force('closed')
    await vi.waitFor(() => expect(b.host.breaker?.state).toBe('closed'), { timeout: 2000 })

    // B's window still holds old failures and re-opens at once: that stays on B.
    b.host.breaker?.force('open')
    await new Promise((r) => setTimeout(r, 150))
    expect(b.published).toEqual([])
    expect(a.host.breaker?.state).toBe('closed')

    // B's own probe fails (half-open → open): that is news for everyone.
    await vi.waitFor(() => expect(b.host.breaker?.state).toBe('half-open'), { timeout: 2000 })
    b.host.breaker?.force('open')
    expect(b.published).toEqual(['open'])
    await vi.waitFor(() => expect(a.host.breaker?.state).toBe('open'), { timeout: 2000 })
    // Whose finding each change was, as the audit trail records it.
    expect(b.origins).toEqual(['open peer', 'closed peer', 'open local', 'half-open local', 'open local'])
    expect(a.origins).toEqual(['open local', 'closed local', 'open peer'])
  })
})

describe('breaker states shared through a Redis Cluster (3 masters)', () => {
  const nodes = useRedisCluster()

  it('opens and closes the other instance', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const store = { cluster: nodes() }
    const a = await instance(prefix, store)
    const b = await instance(prefix, store)
    await waitForSubscribers(a.conn.client, `${prefix}breaker`, 2, 5000)

    a.host.breaker?.force('open')
    await vi.waitFor(() => expect(b.host.breaker?.state).toBe('open'), { timeout: 2000 })
    a.host.breaker?.force('closed')
    await vi.waitFor(() => expect(b.host.breaker?.state).toBe('closed'), { timeout: 2000 })
    expect(b.published).toEqual([])
  }, 30_000)
})
