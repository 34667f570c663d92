/**
 * Breaker states shared through Redis (`breaker.shared`): two gateway
 * instances (Fastify and Express, one process each would behave the same) on
 * one real Redis. When one instance's breaker for an upstream opens, the other
 * refuses at once without sending anything there; when a probe closes it
 * again, the other resumes too.
 */
import { once } from 'node:events'
import { randomUUID } from 'node:crypto'
import type { ProxyRouteOptions } from '@aegis/core'
import { afterEach, describe, expect, inject, it, vi } from 'vitest'
import { waitForSubscribers } from '../helpers/redis.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { expressGateway, fastifyGateway, type GatewayApp } from './gateway-apps.js'

let upstream: Upstream | undefined
const apps: GatewayApp[] = []

afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()))
  await upstream?.close()
})

/** A route whose breaker opens after 4 failed requests, shared under a store prefix of its own. */
const route = (url: string, resetTimeout: number): ProxyRouteOptions => ({
  prefix: '/api',
  name: 'shared-api',
  upstreams: [url],
  retry: false,
  outlier: false,
  breaker: { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeout, shared: true },
})

/** The next state a route's breaker reports, within 2 s. */
const nextBreakerState = async (app: GatewayApp): Promise<string> => {
  const [event] = (await once(app.routes[0]!.events, 'breaker', { signal: AbortSignal.timeout(2000) })) as [
    { state: string },
  ]
  return event.state
}

describe('breaker states shared through Redis', () => {
  it("opens every instance's breaker when one opens, and closes them when a probe succeeds", async () => {
    let failing = true
    upstream = await startUpstream('flaky', (_req, res) => {
      res.statusCode = failing ? 500 : 200
      res.end(failing ? 'down' : 'up')
    })
    const store = { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` }
    // A probes after 300 ms; B would wait a minute on its own.
    const a = await fastifyGateway([route(upstream.url, 300)], { limiter: false, store })
    apps.push(a)
    const b = await expressGateway([route(upstream.url, 60_000)], { limiter: false, store })
    apps.push(b)
    // Both instances listen before anything happens.
    await vi.waitFor(() => expect(a.core.store?.up).toBe(true), { timeout: 2000 })
    await waitForSubscribers(a.core.store!.client, `${store.prefix}breaker`, 2)

    const bOpened = nextBreakerState(b)
    for (let i = 0; i < 4; i++) expect((await fetch(`${a.url}/api/x`)).status).toBe(500)
    expect(await bOpened).toBe('open')

    // B has seen no failure itself, yet refuses at once without reaching the upstream.
    const before = upstream.seen.length
    const refused = await fetch(`${b.url}/api/x`)
    expect(refused.status).toBe(503)
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    expect(upstream.seen.length).toBe(before)

    // The upstream recovers; A's probe closes A's breaker, and B's with it.
    failing = false
    await new Promise((r) => setTimeout(r, 350))
    const bClosed = nextBreakerState(b)
    expect((await fetch(`${a.url}/api/x`)).status).toBe(200)
    expect(await bClosed).toBe('closed')
    expect((await fetch(`${b.url}/api/x`)).status).toBe(200)
    // Each instance's audit trail says whose finding each change was.
    const trail = (app: GatewayApp) =>
      app.core.audit?.entries({ types: ['upstream.breaker'] }).map((e) => [e.state, e.origin])
    expect(trail(a)).toEqual([
      ['open', 'local'],
      ['half-open', 'local'],
      ['closed', 'local'],
    ])
    expect(trail(b)).toEqual([
      ['open', 'peer'],
      ['closed', 'peer'],
    ])
  })

  it('refuses breaker.shared without a store, naming the option', async () => {
    await expect(
      fastifyGateway([{ prefix: '/api', upstreams: ['http://127.0.0.1:9'], breaker: { shared: true } }], {
        limiter: false,
      }),
    ).rejects.toThrow(/proxy\.0\.breaker\.shared: sharing breaker states needs a shared store/)
  })
})
