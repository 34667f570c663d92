/**
 * The limiter's store contract: the same behaviour whatever holds the buckets. In
 * the spirit of express-rate-limit's test/external/stores: one list of promises
 * (`contract()`), run with `describe.each` over every `RateLimitStore` (limiter/store.ts)
 * — memory GCRA, Redis GCRA on one real Redis and on a real Redis Cluster of three
 * masters, fixed windows on each, the insurance with Redis up and down, and the
 * routed store the limiter builds when its policies mix algorithms — and then once
 * more through the public limiter over a real socket, for each backend and algorithm.
 *
 * The promises talk to a store through `LimiterDriver` only (consume, penalty, reward,
 * get, reset): `storeDriver()` calls a store, `limiterDriver()` sends HTTP requests and
 * calls `aegis.limiter`. The promises about several policies in one request (all or
 * nothing, bans, observing policies) call the stores directly.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Cluster } from 'ioredis'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { createAegis, type Aegis, type StoreOptions } from '../src/index.js'
import { newVerdict, type Verdict } from '../src/limiter/gcra.js'
import type { Decision, RateLimitStore, StorePolicy } from '../src/limiter/store.js'
import { createFixedWindowStore } from '../src/limiter/stores/fixed-window.js'
import { createLimiterStore, type AlgorithmPolicy } from '../src/limiter/stores/index.js'
import { createInsuredStore } from '../src/limiter/stores/insured.js'
import { createMemoryGcraStore } from '../src/limiter/stores/memory-gcra.js'
import { createRedisGcraStore } from '../src/limiter/stores/redis-gcra.js'
import { connectStore, storeSchema, type RedisConnection } from '../src/store/index.js'
import { useRedisCluster, type RedisClusterNode } from '../../../test/helpers/redis-cluster.js'
import { freePort, startRedisServer, type RedisServer } from '../../../test/helpers/redis.js'

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

/** A policy as the limiter compiles it: `points` per `duration` s, burst = points, no ban. */
function policyOf(index: number, points: number, duration: number, more: Partial<AlgorithmPolicy> = {}) {
  const interval = (duration * 1000) / points
  const policy: AlgorithmPolicy = {
    index,
    name: index === 0 ? 'default' : `p${index}`,
    points,
    duration,
    rate: { interval, tolerance: points * interval, blockMs: 0 },
    enforce: true,
    failClosed: false,
    algorithm: 'gcra',
    ...more,
  }
  return policy
}

/** A store under test, with what its connection and insurance counted. */
interface StoreUnderTest {
  readonly store: RateLimitStore
  /** Redis command errors so far. */
  readonly errors: () => number
  /** Decisions the insurance made so far (one per policy). */
  readonly insured: () => number
  /** Key prefix on Redis (unique to the test). */
  readonly prefix: string
  close(): Promise<void>
}

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined }

/** Aegis' connection to a Redis (or a Cluster), counting its errors; waits for the first connection. */
async function connect(options: StoreOptions): Promise<{ conn: RedisConnection; errors: () => number }> {
  let errors = 0
  const conn = connectStore(storeSchema.parse(options), silent, { onError: () => void errors++ })
  if (conn === undefined) throw new Error('no Redis configured')
  await conn.started
  return { conn, errors: () => errors }
}

/** How a store of the suite is built from the policies of a test. */
type Backend = 'memory' | 'redis' | 'cluster' | 'down'
interface StoreCase {
  readonly backend: Backend
  /** One policy is decided synchronously (memory): no promise, no microtask. */
  readonly sync: boolean
  /** Redis is down: the insurance decides every request, and counts each. */
  readonly insured: boolean
  build(
    policies: readonly AlgorithmPolicy[],
    conn: RedisConnection | undefined,
    onInsurance: () => void,
  ): RateLimitStore
}

const memoryGcra = (ps: readonly StorePolicy[]) => createMemoryGcraStore(ps, { maxKeys: 10_000 })
/** Policies 0, 2, … count with GCRA, 1, 3, … with fixed windows: the limiter routes them to two stores. */
const mixed = (ps: readonly AlgorithmPolicy[]): AlgorithmPolicy[] =>
  ps.map((p) => ({ ...p, algorithm: p.index % 2 === 0 ? 'gcra' : 'fixed-window' }))

/** Every `RateLimitStore` of limiter/stores/, on each backend it runs on. */
const storeCases: [string, StoreCase][] = [
  ['memory GCRA', { backend: 'memory', sync: true, insured: false, build: (ps) => memoryGcra(ps) }],
  [
    'Redis GCRA',
    { backend: 'redis', sync: false, insured: false, build: (_, conn) => createRedisGcraStore(conn!) },
  ],
  [
    'Redis Cluster GCRA (3 masters)',
    { backend: 'cluster', sync: false, insured: false, build: (_, conn) => createRedisGcraStore(conn!) },
  ],
  [
    'fixed window, memory',
    { backend: 'memory', sync: false, insured: false, build: (ps) => createFixedWindowStore(ps) },
  ],
  [
    'fixed window, Redis',
    { backend: 'redis', sync: false, insured: false, build: (ps, conn) => createFixedWindowStore(ps, conn) },
  ],
  [
    'fixed window, Redis Cluster (3 masters)',
    {
      backend: 'cluster',
      sync: false,
      insured: false,
      build: (ps, conn) => createFixedWindowStore(ps, conn),
    },
  ],
  [
    'insurance over Redis GCRA, Redis up',
    {
      backend: 'redis',
      sync: false,
      insured: false,
      build: (ps, conn, onInsurance) =>
        createInsuredStore(createRedisGcraStore(conn!), memoryGcra(ps), conn!, { onInsurance }),
    },
  ],
  [
    'insurance over Redis GCRA, Redis down: memory decides',
    {
      backend: 'down',
      sync: false,
      insured: true,
      build: (ps, conn, onInsurance) =>
        createInsuredStore(createRedisGcraStore(conn!), memoryGcra(ps), conn!, { onInsurance }),
    },
  ],
  [
    'insurance over a Redis fixed window, Redis down: memory decides',
    {
      backend: 'down',
      sync: false,
      insured: true,
      build: (ps, conn, onInsurance) =>
        createInsuredStore(createFixedWindowStore(ps, conn), createFixedWindowStore(ps), conn!, {
          onInsurance,
        }),
    },
  ],
  [
    "the limiter's store in memory, GCRA and fixed window routed",
    {
      backend: 'memory',
      sync: true,
      insured: false,
      build: (ps, conn, onInsurance) => createLimiterStore(mixed(ps), conn, { maxKeys: 10_000, onInsurance }),
    },
  ],
  [
    "the limiter's store on Redis, GCRA and fixed window routed, insured",
    {
      backend: 'redis',
      sync: false,
      insured: false,
      build: (ps, conn, onInsurance) => createLimiterStore(mixed(ps), conn, { maxKeys: 10_000, onInsurance }),
    },
  ],
  [
    "the limiter's store on a Redis Cluster, GCRA and fixed window routed, insured",
    {
      backend: 'cluster',
      sync: false,
      insured: false,
      build: (ps, conn, onInsurance) => createLimiterStore(mixed(ps), conn, { maxKeys: 10_000, onInsurance }),
    },
  ],
]

/**
 * `reset` on a store: while Redis is down the insurance forgets the key and the promise
 * rejects, as Redis may still hold it when it comes back (the admin who asked must know).
 */
async function resetKey(sut: StoreUnderTest, c: StoreCase, policy: StorePolicy, key: string): Promise<void> {
  if (c.insured) await expect(sut.store.reset(policy, key)).rejects.toThrow()
  else await sut.store.reset(policy, key)
}

/**
 * The store operations the limiter relies on, called on the store itself. A refusal's
 * `retryAfter` is its `retryMs` in whole seconds, as the limiter's `Retry-After` says it.
 */
function storeDriver(sut: StoreUnderTest, points: number, duration: number, c: StoreCase): LimiterDriver {
  const policy = policyOf(0, points, duration)
  let decisions = 0
  return {
    async consume(key, cost = 1) {
      const decided = sut.store.consume([policy], [key], [cost], performance.now())
      expect(decided instanceof Promise).toBe(!c.sync)
      decisions++
      // A synchronous answer is the store's scratch: read before any await lets another request in.
      const v = (decided instanceof Promise ? await decided : decided)?.[0]
      if (v === undefined) throw new Error('the store did not decide')
      return {
        allowed: v.allowed,
        remaining: v.remaining,
        retryAfter: v.allowed ? undefined : Math.max(1, Math.ceil(v.retryMs / 1000)),
      }
    },
    penalty: async (key, n) => sut.store.adjust(policy, key, n),
    reward: async (key, n) => sut.store.adjust(policy, key, -n),
    async get(key) {
      const v = await sut.store.get(policy, key, newVerdict())
      return v === undefined ? undefined : { limit: points, remaining: v.remaining, retryMs: v.retryMs }
    },
    reset: async (key) => resetKey(sut, c, policy, key),
    // Decisions made elsewhere than the case says: a store error, or the insurance while
    // Redis is up (or Redis while it is down).
    fallbacks: () =>
      Promise.resolve(sut.errors() + (c.insured ? Math.abs(sut.insured() - decisions) : sut.insured())),
    close: () => sut.close(),
  }
}

/**
 * The promises every store keeps, whichever driver reaches it. `start` builds a fresh
 * store of `points` per `duration` s; `keysOnEveryMaster` checks a cluster run.
 */
function contract(
  start: (points: number, duration: number) => Promise<LimiterDriver>,
  keysOnEveryMaster: (() => Promise<void>) | undefined,
): void {
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
      keys.flatMap((k) => Array.from({ length: 5 }, () => d.consume(k).then((c) => [k, c.allowed] as const))),
    )
    const admitted = new Map<string, number>()
    for (const [k, allowed] of results) if (allowed) admitted.set(k, (admitted.get(k) ?? 0) + 1)
    expect(keys.filter((k) => admitted.get(k) !== 3)).toEqual([])
    if (keysOnEveryMaster !== undefined) await keysOnEveryMaster()
  }, 30_000)
}

describe('limiter store contract', () => {
  const clusterNodes = useRedisCluster()

  describe.each(storeCases)('store: %s', (_name, c) => {
    let sut: StoreUnderTest | undefined
    let driver: LimiterDriver | undefined
    /** A fresh store of `policies` on the case's backend, under a prefix of its own. */
    const open = async (policies: readonly AlgorithmPolicy[]): Promise<StoreUnderTest> => {
      const prefix = `aegis-test:${randomUUID()}:`
      let insured = 0
      const onInsurance = () => void insured++
      let redis: Awaited<ReturnType<typeof connect>> | undefined
      if (c.backend === 'redis')
        redis = await connect({ redis: inject('redisUrl'), prefix, commandTimeout: 1_000 })
      else if (c.backend === 'cluster')
        redis = await connect({ cluster: clusterNodes(), prefix, commandTimeout: 1_000 })
      // Nothing listens there: the connection is refused, Redis is down from the start.
      else if (c.backend === 'down')
        redis = await connect({ redis: `redis://127.0.0.1:${await freePort()}`, prefix })
      expect(redis?.conn.up ?? false).toBe(c.backend === 'redis' || c.backend === 'cluster')
      sut = {
        store: c.build(policies, redis?.conn, onInsurance),
        errors: redis?.errors ?? (() => 0),
        insured: () => insured,
        prefix,
        close: async () => redis?.conn.close(),
      }
      return sut
    }
    afterEach(async () => {
      if (driver !== undefined) expect(await driver.fallbacks()).toBe(0)
      else if (sut !== undefined) {
        expect(sut.errors()).toBe(0)
        // The insurance decided if and only if Redis was down.
        expect(sut.insured() > 0).toBe(c.insured)
      }
      await sut?.close()
      sut = undefined
      driver = undefined
    })

    contract(
      async (points, duration) => {
        driver = storeDriver(await open([policyOf(0, points, duration)]), points, duration, c)
        return driver
      },
      c.backend === 'cluster'
        ? async () => expectKeysOnEveryMaster(clusterNodes(), sut?.prefix ?? '')
        : undefined,
    )

    // Several policies in one request: the verdicts of a batch, all or nothing.
    const decide = async (
      policies: readonly StorePolicy[],
      keys: readonly string[],
      costs: readonly number[] = policies.map(() => 1),
    ): Promise<readonly Verdict[]> => {
      const decided = (sut as StoreUnderTest).store.consume(policies, keys, costs, performance.now())
      const d: Decision = decided instanceof Promise ? await decided : decided
      if (d === undefined) throw new Error('the store did not decide')
      return d.slice(0, policies.length).map((v) => ({ ...v }))
    }
    const remaining = async (p: StorePolicy, key: string): Promise<number | undefined> =>
      (await (sut as StoreUnderTest).store.get(p, key, newVerdict()))?.remaining

    it('a request under two policies is all or nothing: when one refuses, the other is not charged', async () => {
      const wide = policyOf(0, 10, 60)
      const narrow = policyOf(1, 1, 60)
      const store = await open([wide, narrow])
      expect((await decide([wide, narrow], ['k', 'k'])).map((v) => v.allowed)).toEqual([true, true])
      const refused = await decide([wide, narrow], ['k', 'k'])
      expect(refused.map((v) => v.allowed)).toEqual([true, false])
      expect(refused[1]?.retryMs).toBeGreaterThan(0)
      // Charged once, for the admitted request only.
      expect(await remaining(wide, 'k')).toBe(9)
      // Alone, the wide policy still admits and charges.
      expect(await decide([wide], ['k'])).toMatchObject([{ allowed: true, remaining: 8 }])
      await resetKey(store, c, narrow, 'k')
      expect(await remaining(narrow, 'k')).toBeUndefined()
    })

    it('policies counting different keys (a user id and an address) are still all or nothing', async () => {
      const perUser = policyOf(0, 10, 60)
      const perAddress = policyOf(1, 2, 60)
      await open([perUser, perAddress])
      const keys = ['user:7', '203.0.113.7']
      expect((await decide([perUser, perAddress], keys)).map((v) => v.allowed)).toEqual([true, true])
      expect((await decide([perUser, perAddress], keys)).map((v) => v.allowed)).toEqual([true, true])
      expect((await decide([perUser, perAddress], keys)).map((v) => v.allowed)).toEqual([true, false])
      expect(await remaining(perUser, 'user:7')).toBe(8)
      expect(await remaining(perAddress, '203.0.113.7')).toBe(0)
      // Another user from the same address is refused by the address alone, and not charged.
      expect((await decide([perUser, perAddress], ['user:8', '203.0.113.7']))[1]?.allowed).toBe(false)
      // (A fixed window given back its points may keep an empty counter: full is full.)
      expect((await remaining(perUser, 'user:8')) ?? 10).toBe(10)
    })

    it('an observing policy reports its refusal but never refuses the request, nor stops the others charging', async () => {
      const enforced = policyOf(0, 10, 60)
      const observed = policyOf(1, 1, 60, { enforce: false })
      await open([enforced, observed])
      expect((await decide([enforced, observed], ['k', 'k'])).map((v) => v.allowed)).toEqual([true, true])
      expect((await decide([enforced, observed], ['k', 'k'])).map((v) => v.allowed)).toEqual([true, false])
      expect(await remaining(enforced, 'k')).toBe(8)
    })

    it('blockDuration: a key past its limit is banned for the whole block, get says so, reset lifts it', async () => {
      const banning = policyOf(0, 2, 60, { rate: { interval: 30_000, tolerance: 60_000, blockMs: 60_000 } })
      const sut = await open([banning])
      expect((await decide([banning], ['k'])).map((v) => v.allowed)).toEqual([true])
      expect((await decide([banning], ['k'])).map((v) => v.allowed)).toEqual([true])
      const banned = (await decide([banning], ['k']))[0]
      expect(banned).toMatchObject({ allowed: false, banned: true, remaining: 0 })
      expect(banned?.retryMs).toBeGreaterThan(59_000)
      expect(banned?.retryMs).toBeLessThanOrEqual(60_000)
      expect((await decide([banning], ['k']))[0]).toMatchObject({ allowed: false, banned: true })
      expect(await sut.store.get(banning, 'k', newVerdict())).toMatchObject({ banned: true, remaining: 0 })
      await resetKey(sut, c, banning, 'k')
      expect((await decide([banning], ['k']))[0]).toMatchObject({
        allowed: true,
        banned: false,
        remaining: 1,
      })
    })
  })

  // The same promises through the public limiter, over a real socket: headers, Retry-After, penalty().
  const limiterStores: [string, () => StoreOptions][] = [
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
  const cases = limiterStores.flatMap(([store, options]) =>
    algorithms.map((a) => [store, a, options] as const),
  )

  describe.each(cases)('limiter over HTTP: %s, %s', (storeName, algorithm, storeOptions) => {
    let driver: LimiterDriver | undefined
    let prefix = ''
    afterEach(async () => {
      if (driver !== undefined) expect(await driver.fallbacks()).toBe(0)
      await driver?.close()
      driver = undefined
    })
    contract(
      async (points, duration) => {
        const options = storeOptions()
        prefix = options?.prefix ?? ''
        driver = await limiterDriver(options, algorithm, points, duration)
        return driver
      },
      storeName.startsWith('redis cluster')
        ? async () => expectKeysOnEveryMaster(clusterNodes(), prefix)
        : undefined,
    )
  })

  describe('the insurance', () => {
    const owned: RedisServer[] = []
    const conns: RedisConnection[] = []
    afterEach(async () => {
      for (const c of conns.splice(0)) await c.close()
      for (const r of owned.splice(0)) await r.stop()
    })
    const down = async () => {
      const { conn, errors } = await connect({ redis: `redis://127.0.0.1:${await freePort()}`, prefix: 'x:' })
      conns.push(conn)
      return { conn, errors }
    }

    it.each([
      [
        'GCRA',
        (ps: StorePolicy[], conn: RedisConnection) => [createRedisGcraStore(conn), memoryGcra(ps)] as const,
      ],
      [
        'fixed window',
        (ps: StorePolicy[], conn: RedisConnection) =>
          [createFixedWindowStore(ps, conn), createFixedWindowStore(ps)] as const,
      ],
    ])(
      '%s: while Redis is down, a request under a failClosed policy is not decided (503) and charges nothing',
      async (_name, build) => {
        const open = policyOf(0, 5, 60)
        const closed = policyOf(1, 5, 60, { failClosed: true })
        const { conn } = await down()
        const [primary, insurance] = build([open, closed], conn)
        const counted: string[] = []
        const store = createInsuredStore(primary, insurance, conn, {
          onInsurance: (p) => void counted.push(p.name),
        })
        expect(await store.consume([open, closed], ['k', 'k'], [1, 1], performance.now())).toBeUndefined()
        expect(await store.consume([closed], ['k'], [1], performance.now())).toBeUndefined()
        expect(counted).toEqual([])
        expect(await insurance.get(open, 'k', newVerdict())).toBeUndefined()
        // A fail-open policy alone is decided in memory, and counted.
        expect(await store.consume([open], ['k'], [1], performance.now())).toMatchObject([
          { allowed: true, remaining: 4 },
        ])
        expect(counted).toEqual(['default'])
      },
    )

    it('Redis killed between two requests: the next one is decided in memory, never rejected; Redis decides again once back', async () => {
      const server = await startRedisServer()
      owned.push(server)
      const { conn, errors } = await connect({
        redis: server.url,
        prefix: `aegis-test:${randomUUID()}:`,
        commandTimeout: 200,
        probeInterval: 100,
      })
      conns.push(conn)
      const p = policyOf(0, 5, 60)
      let counted = 0
      const store = createInsuredStore(createRedisGcraStore(conn), memoryGcra([p]), conn, {
        onInsurance: () => void counted++,
      })
      expect(await store.consume([p], ['k'], [3], performance.now())).toMatchObject([
        { allowed: true, remaining: 2 },
      ])
      expect(counted).toBe(0)
      server.process.kill('SIGKILL')
      await once(server.process, 'exit')
      // Redis is gone: memory decides from a full bucket, whether the close or a failed command told the store first.
      expect(await store.consume([p], ['k'], [1], performance.now())).toMatchObject([
        { allowed: true, remaining: 4 },
      ])
      expect(counted).toBe(1)
      expect(conn.up).toBe(false)
      await store.adjust(p, 'k', 1)
      expect(await store.get(p, 'k', newVerdict())).toMatchObject({ remaining: 3 })
      // Back: the bucket Redis kept is gone with the process (no persistence); Redis decides again.
      owned.push(await startRedisServer([], server.port))
      const deadline = Date.now() + 5_000
      while (!conn.up && Date.now() < deadline) await sleep(20)
      expect(conn.up).toBe(true)
      expect(await store.consume([p], ['k'], [1], performance.now())).toMatchObject([
        { allowed: true, remaining: 4 },
      ])
      expect(counted).toBe(1)
      expect(errors()).toBeLessThanOrEqual(1)
    })
  })
})

/** The keys of the last cluster run really spread over the slots of every master. */
async function expectKeysOnEveryMaster(nodes: RedisClusterNode[], prefix: string): Promise<void> {
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
