/**
 * The history shared through a real Redis (and a real Redis Cluster of three masters):
 * two instances serve real HTTP requests on a virtual clock, flush their minutes, and a
 * merged query adds them up to what the test sent. A Redis killed mid-run fails no
 * request; the flush resumes once it is back.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { useRedisCluster } from '../../../test/helpers/redis-cluster.js'
import { startRedisServer, type RedisServer } from '../../../test/helpers/redis.js'
import { waitFor } from '../../../test/helpers/wait.js'
import { createAegis, type Aegis } from '../src/index.js'

let closers: (() => Promise<void>)[] = []
let servers: RedisServer[] = []
afterEach(async () => {
  for (const close of closers.reverse()) await close()
  closers = []
  await Promise.all(servers.map((s) => s.stop()))
  servers = []
})

type Store = { redis: string } | { cluster: { host: string; port: number }[] }

/** A virtual clock shared by the instances: whole minutes, half an hour ago. */
function virtualClock() {
  let now = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000
  return { base: now, clock: () => now, set: (t: number) => void (now = t) }
}

interface Instance {
  readonly aegis: Aegis
  readonly url: string
  /** Send `n` requests answered `status` (the app answers what the path says), and wait until history saw them. */
  send(n: number, status: number): Promise<void>
}

async function instance(name: string, prefix: string, store: Store, clock: () => number): Promise<Instance> {
  const aegis = createAegis({
    store: { ...store, prefix, commandTimeout: 200, probeInterval: 100 },
    limiter: false,
    history: { instance: name, clock, sampleMs: 0 },
  })
  const server: Server = createServer(
    aegis.handler((req, res) => {
      res.statusCode = Number(req.url?.slice(1)) || 200
      res.end('ok')
    }),
  )
  aegis.attach(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  closers.push(async () => {
    server.closeAllConnections()
    await aegis.close()
  })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  let seen = 0
  return {
    aegis,
    url,
    async send(n, status) {
      for (let i = 0; i < n; i++) {
        const res = await fetch(`${url}/${status}`)
        expect(res.status).toBe(status)
        await res.text()
      }
      seen += n
      // The response is observed when it closes on the server: wait for it before the clock moves.
      await waitFor(`${name} observed ${seen}`, async () => {
        const r = await aegis.history!.query({ range: '30m', series: ['requests'] })
        return sum(r.series.requests!.sum) >= seen
      })
    },
  }
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0)
const prefixed = (): string => `aegis-test:${randomUUID()}:`

/** Two instances, ten minutes of load, flushed; the merged 30 m query checked against what was sent. */
async function twoInstancesMerge(store: () => Store): Promise<void> {
  const prefix = prefixed()
  const v = virtualClock()
  const a = await instance('a', prefix, store(), v.clock)
  const b = await instance('b', prefix, store(), v.clock)
  await waitFor('both connected', () => a.aegis.store!.up && b.aegis.store!.up, 5_000)
  for (let m = 0; m < 10; m++) {
    v.set(v.base + m * 60_000 + 5_000)
    await a.send(1 + (m % 3), 200)
    await b.send(2, 503)
    v.set(v.base + m * 60_000 + 7_000)
    await a.send(1, 404)
  }
  v.set(v.base + 10 * 60_000 + 1_000)
  expect(await a.aegis.history!.flush()).toBe(true)
  expect(await b.aegis.history!.flush()).toBe(true)

  const merged = await a.aegis.history!.query({ range: '30m', merge: true })
  expect(merged.scope).toBe('merged')
  expect(merged.complete).toBe(true)
  expect(merged.instances).toEqual(['a', 'b'])
  const sentByA = Array.from({ length: 10 }, (_, m) => 1 + (m % 3) + 1)
  expect(sum(merged.series.requests!.sum)).toBe(sum(sentByA) + 20)
  expect(sum(merged.series['status.5xx']!.sum)).toBe(20)
  expect(sum(merged.series['status.4xx']!.sum)).toBe(10)
  expect(sum(merged.series['status.2xx']!.sum)).toBe(sum(sentByA) - 10)
  // Point by point: the minutes of the load, each with both instances' requests.
  const first = merged.times.indexOf(v.base)
  expect(first).toBeGreaterThanOrEqual(0)
  expect(merged.series.requests!.sum.slice(first, first + 10)).toEqual(sentByA.map((n) => n + 2))
  // Both instances covered each minute; each minute's busiest second: a's 200s (1–3), or b's 2.
  expect(merged.seconds.slice(first, first + 10).every((s) => s === 120)).toBe(true)
  expect(merged.series.requests!.max.slice(first, first + 10)).toEqual(
    sentByA.map((_, m) => Math.max(1 + (m % 3), 2)),
  )
  expect(sum(merged.series.latency!.count)).toBe(sum(sentByA) + 20)
  expect(sum(merged.histograms.latency!.counts.map(sum))).toBe(sum(sentByA) + 20)

  const local = await a.aegis.history!.query({ range: '30m' })
  expect(local.instances).toEqual(['a'])
  expect(sum(local.series.requests!.sum)).toBe(sum(sentByA))

  // The same from b, which merges a from Redis and itself from memory.
  const fromB = await b.aegis.history!.query({ range: '30m', merge: true })
  expect(sum(fromB.series.requests!.sum)).toBe(sum(sentByA) + 20)
  expect((await a.aegis.history!.instances()).map((i) => i.instance).sort()).toEqual(['a', 'b'])
  const redis = await a.aegis.history!.redis()
  expect(redis?.up).toBe(true)
  expect(redis?.total?.usedMemory).toBeGreaterThan(0)
}

describe('history shared through Redis', () => {
  it('two instances: a merged query adds both up, point by point', async () => {
    await twoInstancesMerge(() => ({ redis: inject('redisUrl') }))
  })

  it('Redis killed mid-run: every request answered, the flush resumes once Redis is back', async () => {
    const server = await startRedisServer()
    servers.push(server)
    const prefix = prefixed()
    const v = virtualClock()
    const store = (): Store => ({ redis: server.url })
    const a = await instance('a', prefix, store(), v.clock)
    const b = await instance('b', prefix, store(), v.clock)
    await waitFor('both connected', () => a.aegis.store!.up && b.aegis.store!.up, 5_000)
    v.set(v.base + 5_000)
    await a.send(3, 200)
    v.set(v.base + 61_000)
    expect(await a.aegis.history!.flush()).toBe(true)

    await server.stop()
    await waitFor('Redis seen down', () => !a.aegis.store!.up, 5_000)
    // During the outage: requests are answered as ever, and flushes fail quietly.
    const started = performance.now()
    await a.send(5, 200)
    expect(performance.now() - started).toBeLessThan(2_000)
    expect(await a.aegis.history!.flush()).toBe(false)
    v.set(v.base + 2 * 60_000 + 5_000)
    await a.send(2, 500)
    expect(await a.aegis.history!.flush()).toBe(false)
    const merged = await b.aegis.history!.query({ range: '30m', merge: true })
    expect(merged.complete).toBe(false)

    servers.push(await startRedisServer([], server.port))
    await waitFor('Redis seen up again', () => a.aegis.store!.up && b.aegis.store!.up, 10_000)
    v.set(v.base + 3 * 60_000 + 1_000)
    expect(await a.aegis.history!.flush()).toBe(true)
    // The new Redis started empty: what a flushed since minute 1 is there, the outage's minutes included.
    const after = await b.aegis.history!.query({ range: '30m', merge: true })
    expect(after.complete).toBe(true)
    expect(after.instances).toEqual(['b', 'a'])
    const first = after.times.indexOf(v.base)
    expect(after.series.requests!.sum.slice(first, first + 3)).toEqual([0, 5, 2])
    expect(sum(after.series['status.5xx']!.sum)).toBe(2)
  })
})

describe('history shared through a Redis Cluster (3 masters)', () => {
  const nodes = useRedisCluster()
  it('two instances: a merged query adds both up, point by point', async () => {
    await twoInstancesMerge(() => ({ cluster: nodes() }))
  })
})
