import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { createBalancer, type BalancerConfig, type UpstreamHost } from '../src/balancer/index.js'
import { createBreakerBus, shareBreakers } from '../src/gateway/breaker-bus.js'
import { rawAnswer } from '../src/gateway/headers.js'
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

const waitFor = async (check: () => boolean, ms = 2000): Promise<void> => {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** One gateway instance's view of route `api` with one upstream, sharing through a real Redis. */
async function instance(
  prefix: string,
): Promise<{ host: UpstreamHost; published: string[]; conn: RedisConnection }> {
  const conn = connectStore(
    storeSchema.parse({ redis: inject('redisUrl'), prefix }),
    undefined,
  ) as RedisConnection
  closers.push(() => conn.close())
  await waitFor(() => conn.up)
  const bus = createBreakerBus(conn, undefined)
  closers.push(() => bus.close())
  const published: string[] = []
  const publish = bus.publish.bind(bus)
  bus.publish = (route, upstream, state) => {
    published.push(state)
    publish(route, upstream, state)
  }
  const balancer = createBalancer([{ id: 'http://10.0.0.5:8080', weight: 1 }], config, {
    breaker: (h, state) => sharing.changed(h, state), // events come only after construction
  })
  closers.push(() => balancer.close())
  const sharing = shareBreakers(bus, 'api', balancer.hosts, 10_000)
  closers.push(() => sharing.close())
  return { host: balancer.hosts[0] as UpstreamHost, published, conn }
}

describe('breaker states shared through Redis', () => {
  it('opens and closes the other instance, never echoes, and keeps a re-open after a remote close local', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const a = await instance(prefix)
    const b = await instance(prefix)
    // Both instances listen before anything happens.
    const listeners = async () =>
      ((await a.conn.client.pubsub('NUMSUB', `${prefix}breaker`)) as [string, number])[1]
    for (let i = 0; i < 100 && (await listeners()) < 2; i++) await new Promise((r) => setTimeout(r, 20))

    a.host.breaker?.open()
    await waitFor(() => b.host.breaker?.opened === true)
    expect(b.published).toEqual([]) // applied, not published again

    a.host.breaker?.close()
    await waitFor(() => b.host.breaker?.closed === true)

    // B's window still holds old failures and re-opens at once: that stays on B.
    b.host.breaker?.open()
    await new Promise((r) => setTimeout(r, 150))
    expect(b.published).toEqual([])
    expect(a.host.breaker?.closed).toBe(true)

    // B's own probe fails (half-open → open): that is news for everyone.
    await waitFor(() => b.host.breaker?.halfOpen === true)
    b.host.breaker?.open()
    expect(b.published).toEqual(['open'])
    await waitFor(() => a.host.breaker?.opened === true)
  })
})

describe('rawAnswer', () => {
  it('relays end-to-end fields, adds the request id and the framing, and no length for 204', () => {
    const text = (b: Buffer) => b.toString('latin1')
    const refused = text(
      rawAnswer(
        403,
        {
          'content-type': 'text/plain',
          'content-length': '2',
          'keep-alive': 'timeout=5',
          'set-cookie': ['a=1', 'b=2'],
        },
        Buffer.from('no'),
        { name: 'x-request-id', value: 'r1' },
      ),
    )
    expect(refused).toBe(
      'HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n' +
        'x-request-id: r1\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno',
    )
    expect(
      text(rawAnswer(204, { 'x-request-id': 'up' }, Buffer.alloc(0), { name: 'x-request-id', value: 'r1' })),
    ).toBe('HTTP/1.1 204 No Content\r\nx-request-id: up\r\nconnection: close\r\n\r\n')
  })
})
