/**
 * The ghost cache shared through Redis (`ghost: { store: 'redis' }`): two gateway
 * instances on one real Redis (and on a real Redis Cluster of three masters). What A
 * learned, B — which never saw those URLs — answers from the ghost once the upstream
 * is killed. And Redis itself killed (SIGKILL) or frozen (SIGSTOP) in the middle of a
 * load: no request fails and none waits longer than the store's command timeout; with
 * the upstream down too, the gateway's own 502 comes at once; once Redis is back,
 * learning and serving resume.
 */
import { randomUUID } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { afterEach, describe, expect, inject, it } from 'vitest'
import type { AegisOptions, Logger, ProxyRouteOptions, StoreOptions } from '@aegis/core'
import { hit, type Reply } from '../helpers/hit.js'
import { useRedisCluster } from '../helpers/redis-cluster.js'
import { startRedisServer, type RedisServer } from '../helpers/redis.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait.js'
import { nodeGateway, type GatewayApp } from './gateway-apps.js'

/** Behind a load balancer every instance sees the same `Host`: the ghost's key holds it. */
const HOST = 'shop.example'

let apps: GatewayApp[] = []
/** What the instances logged as errors: nothing, whatever Redis does. */
let errors: string[] = []
const logger: Logger = { info() {}, warn() {}, error: (_obj, msg) => void errors.push(msg ?? '') }
let upstream: Upstream | undefined
let redis: RedisServer | undefined
afterEach(async () => {
  await Promise.all(apps.map((a) => a.close()))
  apps = []
  await upstream?.close()
  upstream = undefined
  if (redis !== undefined) {
    redis.process.kill('SIGCONT')
    await redis.stop()
    redis = undefined
  }
  const logged = errors
  errors = []
  expect(logged).toEqual([])
})

/**
 * The origin: JSON naming the URL and how many answers it gave (so that a replay is
 * told from a fresh answer), an ETag, and `Vary: Accept-Language` under `/greeting`;
 * `500 broken` instead while `failing()` says so.
 */
async function origin(port = 0, failing = (): boolean => false): Promise<Upstream> {
  let n = 0
  return startUpstream(
    'origin',
    (req, res) => {
      if (failing()) {
        res.writeHead(500, { 'content-type': 'text/plain' })
        return void res.end('broken')
      }
      const lang = req.headers['accept-language']
      const greeting = req.url?.startsWith('/greeting') === true
      res.writeHead(200, {
        'content-type': 'application/json',
        'cache-control': 'max-age=60',
        etag: `"${req.url ?? ''}${greeting ? `-${lang ?? ''}` : ''}"`,
        ...(greeting && { vary: 'Accept-Language' }),
      })
      res.end(JSON.stringify({ url: req.url, ...(greeting && { lang }), n: ++n }))
    },
    { port },
  )
}

const route = (url: string): ProxyRouteOptions => ({
  prefix: '/svc',
  name: 'svc',
  upstreams: [url],
  retry: false,
  // The upstream comes back on the same port: no breaker nor ejection to wait out in between.
  breaker: false,
  outlier: false,
})

/** A gateway instance keeping its ghost in `store`'s Redis, under the key prefix `store` names. */
async function instance(url: string, store: StoreOptions, options: AegisOptions = {}): Promise<GatewayApp> {
  const app = await nodeGateway([route(url)], {
    limiter: false,
    ghost: { store: 'redis' },
    store,
    logger,
    ...options,
  })
  apps.push(app)
  return app
}

const get = (app: GatewayApp, path: string, headers: Record<string, string> = {}, method = 'GET') =>
  hit(app.port, path, { method, headers: { host: HOST, ...headers } })

const isGhost = (r: Reply): boolean =>
  r.headers['x-aegis-ghost'] === '1' &&
  r.headers['cache-status'] === 'aegis; hit; detail=stale-if-error' &&
  Number(r.headers.age) >= 0

const isGatewayError = (r: Reply): boolean =>
  r.status === 502 &&
  r.headers['content-type']?.startsWith('application/problem+json') === true &&
  r.headers['x-aegis-ghost'] === undefined

/** Wait until the shared store lists `n` entries (learning is written behind the answer). */
const held = (app: GatewayApp, n: number): Promise<void> =>
  waitFor(`${n} ghost entries in Redis`, async () => (await app.core.ghost!.list()).length >= n, 5_000)

/** A learns; the upstream dies; B, started only then, answers what A learned. */
async function sharedLearning(store: () => StoreOptions): Promise<void> {
  upstream = await origin()
  const options = { ...store(), prefix: `aegis-test:${randomUUID()}:` }
  const a = await instance(upstream.url, options)
  await waitFor('A connected to Redis', () => a.core.store?.up === true)

  const paths = Array.from({ length: 20 }, (_, i) => `/svc/items/${i}?b=2&a=${i}`)
  const learned = new Map<string, Reply>()
  for (const path of paths) learned.set(path, await get(a, path))
  const fr = await get(a, '/svc/greeting', { 'accept-language': 'fr' })
  const en = await get(a, '/svc/greeting', { 'accept-language': 'en' })
  for (const r of [...learned.values(), fr, en])
    expect([r.status, r.headers['x-aegis-ghost']]).toEqual([200, undefined])
  await held(a, paths.length + 2)
  await upstream.close()

  // B has never seen any of it: it holds nothing in memory, only what Redis holds.
  const b = await instance(upstream.url, options)
  for (const [path, first] of learned) {
    // The query in another order is the same entry (the key sorts it).
    const reordered = path.replace(/\?b=2&a=(\d+)$/, '?a=$1&b=2')
    const r = await get(b, reordered)
    expect([r.status, isGhost(r)], reordered).toEqual([200, true])
    expect(r.body).toBe(first.body)
    expect(r.headers.etag).toBe(first.headers.etag)
    expect(r.headers['content-type']).toBe('application/json')
  }
  // Each variant to its own `Accept-Language`; a third one was never learned.
  const bFr = await get(b, '/svc/greeting', { 'accept-language': 'fr' })
  const bEn = await get(b, '/svc/greeting', { 'accept-language': 'en' })
  expect([bFr.status, isGhost(bFr), bFr.body]).toEqual([200, true, fr.body])
  expect([bEn.status, isGhost(bEn), bEn.body]).toEqual([200, true, en.body])
  expect(isGatewayError(await get(b, '/svc/greeting', { 'accept-language': 'de' }))).toBe(true)
  // HEAD from the GET's entry; a matching validator gets a 304, from the ghost too.
  const head = await get(b, '/svc/items/3?a=3&b=2', {}, 'HEAD')
  expect([head.status, isGhost(head), head.body]).toEqual([200, true, ''])
  expect(head.headers['content-length']).toBe(String(Buffer.byteLength(learned.get(paths[3]!)!.body)))
  const unchanged = await get(b, '/svc/items/4?a=4&b=2', {
    'if-none-match': learned.get(paths[4]!)!.headers.etag as string,
  })
  expect([unchanged.status, isGhost(unchanged)]).toEqual([304, true])
  // What nobody learned: the gateway's own answer.
  expect(isGatewayError(await get(b, '/svc/never'))).toBe(true)
}

describe('ghost entries shared by two instances', () => {
  it('Redis: B answers from the ghost what A learned, once the upstream is killed', async () => {
    await sharedLearning(() => ({ redis: inject('redisUrl') }))
  })

  describe('Redis Cluster (3 masters)', () => {
    const nodes = useRedisCluster()
    it('B answers from the ghost what A learned, once the upstream is killed', async () => {
      await sharedLearning(() => ({ cluster: nodes(), commandTimeout: 1_000 }))
    }, 30_000)
  })
})

/**
 * The command timeout of these tests, and what a request may take over it: its own
 * forwarding and the upstream's answer, on a machine that may be busy with other work.
 * Every client, gateway and upstream lives in this process, so a stall of its event loop
 * (measured during a load) delays every request alike, Redis or not: the bound adds it.
 * A lookup left to wait out two command timeouts — or more — still fails it.
 */
const COMMAND_TIMEOUT = 250
const MARGIN = 150
const bound = (samples: { stallMs: number }): number => COMMAND_TIMEOUT + MARGIN + samples.stallMs

interface Sample {
  readonly status: number
  /** Answered from the ghost (`X-Aegis-Ghost: 1`). */
  readonly ghost: boolean
  /** When it was sent, in ms from the start of the load, and how long it took. */
  readonly at: number
  readonly ms: number
  readonly error?: string
}

/** One GET on `agent` (a kept-alive socket of one client); an error or a hang is a sample too. */
function timed(app: GatewayApp, path: string, agent: Agent, start: number): Promise<Sample> {
  const t0 = performance.now()
  const sample = (status: number, ghost: boolean, error?: string): Sample => ({
    status,
    ghost,
    at: t0 - start,
    ms: performance.now() - t0,
    ...(error !== undefined && { error }),
  })
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: app.port, path, agent, headers: { host: HOST } },
      (res) => {
        res.resume()
        const ghost = res.headers['x-aegis-ghost'] === '1'
        res.on('end', () => resolve(sample(res.statusCode ?? 0, ghost)))
        res.on('error', (err) => resolve(sample(0, ghost, err.message)))
      },
    )
    req.setTimeout(5_000, () => req.destroy(new Error('no answer in 5 s')))
    req.on('error', (err) => resolve(sample(0, false, err.message)))
    req.end()
  })
}

/** The URLs of the loads. */
const LOAD_PATHS = Array.from({ length: 40 }, (_, i) => `/svc/load/${i}`)

/** `clients` clients on their own kept-alive sockets, for `ms`, over both instances and the load's URLs; `during` runs at `at` ms. */
async function load(
  targets: readonly GatewayApp[],
  { clients, ms, at, during }: { clients: number; ms: number; at: number; during: () => void },
): Promise<Sample[] & { stallMs: number }> {
  const samples: Sample[] = []
  const loop = monitorEventLoopDelay({ resolution: 10 })
  loop.enable()
  const start = performance.now()
  const end = start + ms
  const timer = setTimeout(during, at)
  let n = 0
  const client = async (c: number): Promise<void> => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    try {
      while (performance.now() < end) {
        const i = n++
        const app = targets[(c + i) % targets.length]!
        samples.push(await timed(app, LOAD_PATHS[i % LOAD_PATHS.length]!, agent, start))
      }
    } finally {
      agent.destroy()
    }
  }
  try {
    await Promise.all(Array.from({ length: clients }, (_, c) => client(c)))
  } finally {
    clearTimeout(timer)
    loop.disable()
  }
  return Object.assign(samples, { stallMs: loop.max / 1e6 })
}

/** How many, the loop's longest stall, the slow ones and the first failed ones, for the assertion messages. */
const summary = (samples: Sample[] & { stallMs: number }, ok: (s: Sample) => boolean) => ({
  requests: samples.length,
  loopStallMs: Math.round(samples.stallMs),
  slow: samples
    .filter((s) => s.ms > COMMAND_TIMEOUT)
    .slice(0, 10)
    .map((s) => [Math.round(s.at), Math.round(s.ms), s.status, s.ghost]),
  slowestMs: Math.round(Math.max(...samples.map((s) => s.ms))),
  failed: samples.filter((s) => !ok(s)).slice(0, 5),
})

describe.each([
  ['killed (SIGKILL)', 'SIGKILL'],
  ['frozen (SIGSTOP)', 'SIGSTOP'],
] as const)('Redis %s in the middle of a load', (_name, signal) => {
  it('fails no request and slows none past the command timeout; the 502 comes at once; learning resumes with Redis', async () => {
    redis = await startRedisServer()
    const server = redis
    upstream = await origin()
    const port = upstream.port
    const store: StoreOptions = {
      redis: server.url,
      prefix: `aegis-test:${randomUUID()}:`,
      commandTimeout: COMMAND_TIMEOUT,
      probeInterval: 100,
    }
    const a = await instance(upstream.url, store)
    const b = await instance(upstream.url, store)
    await waitFor('both connected to Redis', () => a.core.store?.up === true && b.core.store?.up === true)

    // 10 clients for 3 s; Redis goes away after 1 s.
    const samples = await load([a, b], {
      clients: 10,
      ms: 3_000,
      at: 1_000,
      during: () => server.process.kill(signal),
    })
    const seen = summary(samples, (s) => s.status === 200 && !s.ghost)
    expect(seen.requests).toBeGreaterThan(500)
    expect(seen.failed, JSON.stringify(seen)).toEqual([])
    expect(seen.slowestMs, JSON.stringify(seen)).toBeLessThan(bound(samples))
    // The outage was seen (not ridden out by luck): both instances count Redis as down.
    await waitFor(
      'Redis counted as down',
      () => a.core.store?.up === false && b.core.store?.up === false,
      2_000,
    )

    // The upstream dies too: what was learned is out of reach, and the gateway's own 502 comes at once.
    await upstream.close()
    const down = await Promise.all(
      Array.from({ length: 20 }, (_, i) => get(i % 2 === 0 ? a : b, `/svc/load/${i}`)),
    )
    for (const r of down) {
      expect(isGatewayError(r), `${r.status} ${r.body}`).toBe(true)
      expect(r.ms).toBeLessThan(COMMAND_TIMEOUT + MARGIN)
    }

    // Redis is back (a new, empty one on the same port after a kill; the same one, thawed, after a freeze).
    if (signal === 'SIGKILL') redis = await startRedisServer([], server.port)
    else server.process.kill('SIGCONT')
    await waitFor('both back on Redis', () => a.core.store?.up === true && b.core.store?.up === true, 5_000)
    upstream = await origin(port)
    const before = (await b.core.ghost!.list()).length
    const after = Array.from({ length: 5 }, (_, i) => `/svc/after/${i}`)
    const fresh = new Map<string, Reply>()
    for (const path of after) fresh.set(path, await get(a, path))
    await held(b, before + after.length)
    await upstream.close()
    for (const [path, first] of fresh) {
      const r = await get(b, path)
      expect([r.status, isGhost(r), r.body], path).toEqual([200, true, first.body])
    }
    // Neither instance took the outage for oversized answers.
    for (const app of [a, b]) {
      const text = (await app.core.scrapeMetrics())?.body ?? ''
      expect(text).not.toMatch(/ghost_refusals_total\{[^}]*reason="too-large"/)
    }
  }, 30_000)

  it("with the upstream failing: each answer is the ghost's or the upstream's own 500, none slower than the command timeout; the ghost answers again with Redis", async () => {
    redis = await startRedisServer()
    const server = redis
    let failing = false
    upstream = await origin(0, () => failing)
    const store: StoreOptions = {
      redis: server.url,
      prefix: `aegis-test:${randomUUID()}:`,
      commandTimeout: COMMAND_TIMEOUT,
      probeInterval: 100,
    }
    const a = await instance(upstream.url, store)
    const b = await instance(upstream.url, store)
    await waitFor('both connected to Redis', () => a.core.store?.up === true && b.core.store?.up === true)
    for (const path of LOAD_PATHS) expect((await get(a, path)).status).toBe(200)
    await held(b, LOAD_PATHS.length)

    // The upstream answers 500 (a listed status) to everything; Redis goes away after 1 s of load.
    failing = true
    const samples = await load([a, b], {
      clients: 10,
      ms: 3_000,
      at: 1_000,
      during: () => server.process.kill(signal),
    })
    const seen = summary(samples, (s) => (s.status === 200 && s.ghost) || (s.status === 500 && !s.ghost))
    expect(seen.requests).toBeGreaterThan(500)
    expect(seen.failed, JSON.stringify(seen)).toEqual([])
    expect(seen.slowestMs, JSON.stringify(seen)).toBeLessThan(bound(samples))
    // From the ghost while Redis answered; the upstream's own 500 once it was out of reach.
    // (A lookup that Redis, starved of CPU, answers late counts as an outage too: most, not all.)
    const early = samples.filter((s) => s.at < 900)
    expect(early.filter((s) => s.ghost).length / early.length).toBeGreaterThan(0.9)
    const late = samples.filter((s) => s.at > 1_500 && s.status !== 500)
    expect(late, JSON.stringify(late.slice(0, 5))).toEqual([])

    // Redis is back: after a freeze it still holds what was learned and the ghost answers it
    // again; a killed one comes back empty, and what is learned anew is answered.
    if (signal === 'SIGKILL') {
      redis = await startRedisServer([], server.port)
      await waitFor('both back on Redis', () => a.core.store?.up === true && b.core.store?.up === true, 5_000)
      failing = false
      for (const path of LOAD_PATHS) expect((await get(a, path)).status).toBe(200)
      await held(b, LOAD_PATHS.length)
      failing = true
    } else {
      server.process.kill('SIGCONT')
      await waitFor('both back on Redis', () => a.core.store?.up === true && b.core.store?.up === true, 5_000)
    }
    for (const path of LOAD_PATHS.slice(0, 10)) {
      const r = await get(b, path)
      expect([r.status, isGhost(r)], path).toEqual([200, true])
    }
  }, 30_000)
})
