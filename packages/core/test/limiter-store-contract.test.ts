/**
 * The limiter's store contract: the same behaviour whatever holds the buckets —
 * process memory, one real Redis, a real Redis Cluster of three masters — for
 * both algorithms. In the spirit of express-rate-limit's test/external/stores:
 * one `describe.each` over the implementations, one list of promises each must keep.
 *
 * The suite talks to the store through `LimiterDriver` only (consume, penalty,
 * reward, get, reset over a real socket and the public `aegis.limiter`), so when
 * the limiter gets a formal store interface (issue 15), a driver built on it
 * can replace `limiterDriver()` and every case below runs unchanged.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Cluster } from 'ioredis'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { createAegis, type Aegis, type StoreOptions } from '../src/index.js'
import { useRedisCluster, type RedisClusterNode } from '../../../test/helpers/redis-cluster.js'

/** What one request learned from the store. */
interface Consumed {
  readonly allowed: boolean
  /** Points left, from the `RateLimit` field. */
  readonly remaining: number
  /** Seconds, on a refusal. */
  readonly retryAfter: number | undefined
}

/** The store operations the limiter relies on, as a user reaches them. */
interface LimiterDriver {
  consume(key: string, cost?: number): Promise<Consumed>
  penalty(key: string, points: number): Promise<void>
  reward(key: string, points: number): Promise<void>
  get(key: string): Promise<{ limit: number; remaining: number; retryMs: number } | undefined>
  reset(key: string): Promise<void>
  /** Store errors and insurance decisions so far (both must stay 0 while the store is healthy). */
  fallbacks(): Promise<number>
  close(): Promise<void>
}

type Algorithm = 'gcra' | 'fixed-window'

/**
 * A limiter of `points` per `duration` seconds on `store`, keyed by the `x-key`
 * header, costing `x-cost` points; `x-penalty` / `x-reward` make the handler of an
 * admitted request call `limiter.penalty()` / `reward()` (they need the request).
 */
async function limiterDriver(
  store: StoreOptions,
  algorithm: Algorithm,
  points: number,
  duration: number,
): Promise<LimiterDriver> {
  const aegis: Aegis = createAegis({
    store,
    limiter: {
      points,
      duration,
      algorithm,
      key: (req) => req.headers['x-key'] as string | undefined,
      cost: (req) => Number(req.headers['x-cost'] ?? 1),
    },
  })
  const server: Server = createServer((req, res) => {
    const finish = (state: Awaited<ReturnType<Aegis['admit']>>): void => {
      aegis.applyHeaders(res, state)
      if (state.rejection) {
        res.writeHead(state.rejection.status, state.rejection.headers).end(state.rejection.body)
        return
      }
      const penalty = Number(req.headers['x-penalty'] ?? 0)
      const reward = Number(req.headers['x-reward'] ?? 0)
      const adjusted =
        penalty > 0
          ? aegis.limiter?.penalty(req, penalty)
          : reward > 0
            ? aegis.limiter?.reward(req, reward)
            : undefined
      void Promise.resolve(adjusted).then(
        () => res.end('ok'),
        () => res.writeHead(500).end(),
      )
    }
    const admitted = aegis.admit(req)
    if (admitted instanceof Promise) void admitted.then(finish)
    else finish(admitted)
  })
  aegis.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`

  const send = async (headers: Record<string, string>): Promise<Response> => {
    const r = await fetch(url, { headers })
    await r.arrayBuffer()
    return r
  }
  return {
    async consume(key, cost = 1) {
      const r = await send({ 'x-key': key, 'x-cost': String(cost) })
      const remaining = /;r=(\d+)/.exec(r.headers.get('ratelimit') ?? '')?.[1]
      const retryAfter = r.headers.get('retry-after')
      expect([200, 429]).toContain(r.status)
      return {
        allowed: r.status === 200,
        remaining: Number(remaining),
        retryAfter: retryAfter === null ? undefined : Number(retryAfter),
      }
    },
    async penalty(key, n) {
      expect((await send({ 'x-key': key, 'x-cost': '0', 'x-penalty': String(n) })).status).toBe(200)
    },
    async reward(key, n) {
      expect((await send({ 'x-key': key, 'x-cost': '0', 'x-reward': String(n) })).status).toBe(200)
    },
    get: async (key) => aegis.limiter?.get(key),
    reset: async (key) => aegis.limiter?.reset(key),
    async fallbacks() {
      const text = (await aegis.scrapeMetrics())?.body ?? ''
      let n = 0
      for (const m of text.matchAll(/^aegis_(?:store_errors|limiter_insurance)_total\{[^}]*\} (\d+)/gm))
        n += Number(m[1])
      return n
    },
    async close() {
      await aegis.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('limiter store contract', () => {
  const clusterNodes = useRedisCluster()
  const prefixes = new Map<string, string>()

  const stores: [string, () => StoreOptions][] = [
    ['memory', () => ({})],
    [
      'redis',
      () => ({ redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 1_000 }),
    ],
    [
      'redis cluster (3 masters)',
      () => ({ cluster: clusterNodes(), prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 1_000 }),
    ],
  ]
  const algorithms: Algorithm[] = ['gcra', 'fixed-window']
  const cases = stores.flatMap(([store, options]) => algorithms.map((a) => [store, a, options] as const))

  describe.each(cases)('%s, %s', (storeName, algorithm, storeOptions) => {
    let driver: LimiterDriver | undefined
    const start = async (points: number, duration: number): Promise<LimiterDriver> => {
      const options = storeOptions()
      prefixes.set(storeName, options?.prefix ?? '')
      driver = await limiterDriver(options, algorithm, points, duration)
      return driver
    }
    afterEach(async () => {
      if (driver !== undefined) expect(await driver.fallbacks()).toBe(0)
      await driver?.close()
      driver = undefined
    })

    it('admits up to the limit, counting down, then refuses with a Retry-After within the window', async () => {
      const d = await start(5, 60)
      const seen: Consumed[] = []
      for (let i = 0; i < 6; i++) seen.push(await d.consume('k'))
      expect(seen.map((c) => c.allowed)).toEqual([true, true, true, true, true, false])
      expect(seen.slice(0, 5).map((c) => c.remaining)).toEqual([4, 3, 2, 1, 0])
      expect(seen[5]?.remaining).toBe(0)
      expect(seen[5]?.retryAfter).toBeGreaterThan(0)
      expect(seen[5]?.retryAfter).toBeLessThanOrEqual(60)
      // Another key has its own bucket.
      expect(await d.consume('other')).toMatchObject({ allowed: true, remaining: 4 })
    })

    it('a request costs its points; one costing more than is left is refused and charges nothing', async () => {
      const d = await start(5, 60)
      expect(await d.consume('k', 3)).toMatchObject({ allowed: true, remaining: 2 })
      expect((await d.consume('k', 3)).allowed).toBe(false)
      expect(await d.consume('k', 2)).toMatchObject({ allowed: true, remaining: 0 })
    })

    it('penalty takes points, reward gives them back; get reports it', async () => {
      const d = await start(10, 60)
      expect(await d.get('k')).toBeUndefined()
      await d.consume('k')
      expect(await d.get('k')).toMatchObject({ limit: 10, remaining: 9 })
      await d.penalty('k', 4)
      expect(await d.get('k')).toMatchObject({ remaining: 5 })
      await d.reward('k', 2)
      expect(await d.get('k')).toMatchObject({ remaining: 7 })
      // A penalty past the limit refuses the key.
      await d.penalty('k', 7)
      expect(await d.get('k')).toMatchObject({ remaining: 0 })
      expect((await d.get('k'))?.retryMs).toBeGreaterThan(0)
      expect((await d.consume('k')).allowed).toBe(false)
    })

    it('reset forgets a key: get reports nothing and the full limit is back', async () => {
      const d = await start(3, 60)
      for (let i = 0; i < 4; i++) await d.consume('k')
      expect((await d.consume('k')).allowed).toBe(false)
      await d.reset('k')
      expect(await d.get('k')).toBeUndefined()
      expect(await d.consume('k')).toMatchObject({ allowed: true, remaining: 2 })
    })

    it('buckets expire: after the window a refused key has its full limit again', async () => {
      const d = await start(2, 1)
      expect((await d.consume('k')).allowed).toBe(true)
      expect((await d.consume('k')).allowed).toBe(true)
      expect((await d.consume('k')).allowed).toBe(false)
      await sleep(1_150)
      expect((await d.consume('k')).allowed).toBe(true)
      expect((await d.consume('k')).allowed).toBe(true)
      expect((await d.consume('k')).allowed).toBe(false)
    })

    it('300 keys at once, 5 requests each against a limit of 3: exactly 3 per key', async () => {
      const KEYS = 300
      const d = await start(3, 60)
      const keys = Array.from({ length: KEYS }, (_, i) => `client-${i}`)
      const results = await Promise.all(
        keys.flatMap((k) =>
          Array.from({ length: 5 }, () => d.consume(k).then((c) => [k, c.allowed] as const)),
        ),
      )
      const admitted = new Map<string, number>()
      for (const [k, allowed] of results) if (allowed) admitted.set(k, (admitted.get(k) ?? 0) + 1)
      expect(keys.filter((k) => admitted.get(k) !== 3)).toEqual([])
      if (storeName.startsWith('redis cluster')) await expectKeysOnEveryMaster(clusterNodes(), prefixes)
    }, 30_000)
  })
})

/** The keys of the last cluster run really spread over the slots of every master. */
async function expectKeysOnEveryMaster(
  nodes: RedisClusterNode[],
  prefixes: Map<string, string>,
): Promise<void> {
  const prefix = prefixes.get('redis cluster (3 masters)') ?? ''
  const cluster = new Cluster(nodes, { clusterRetryStrategy: () => null })
  try {
    await once(cluster, 'ready')
    const masters = cluster.nodes('master')
    expect(masters).toHaveLength(3)
    const counts = await Promise.all(masters.map(async (m) => (await m.keys(`${prefix}*`)).length))
    for (const n of counts) expect(n).toBeGreaterThan(0)
  } finally {
    cluster.disconnect()
  }
}
