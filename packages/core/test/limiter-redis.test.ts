/**
 * The limiter against real Redis servers: the shared one of the run for
 * correctness, and servers of its own for the tests that kill or pause Redis.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { createAegis, type Aegis, type AegisOptions, type Logger } from '../src/index.js'
import { freePort, startRedisServer, type RedisServer } from '../../../test/helpers/redis.js'

interface Served {
  readonly aegis: Aegis
  readonly server: Server
  readonly url: string
  /** Milliseconds each admitted or refused request waited for its admission. */
  readonly waits: number[]
}

const running: Served[] = []
const owned: RedisServer[] = []
const clients: Redis[] = []

/** A plain node:http server behind the core pipeline. */
async function serve(options: AegisOptions): Promise<Served> {
  const aegis = createAegis(options)
  const waits: number[] = []
  const server = createServer((req, res) => {
    const start = performance.now()
    const finish = (state: Awaited<ReturnType<Aegis['admit']>>): void => {
      waits.push(performance.now() - start)
      aegis.applyHeaders(res, state)
      if (state.rejection)
        res.writeHead(state.rejection.status, state.rejection.headers).end(state.rejection.body)
      else res.end('ok')
    }
    const admitted = aegis.admit(req)
    if (admitted instanceof Promise) void admitted.then(finish)
    else finish(admitted)
  })
  aegis.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const served = { aegis, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, waits }
  running.push(served)
  return served
}

/** A test's own client; its connection errors (the test kills servers) are expected. */
const client = (url: string): Redis => {
  const c = new Redis(url, { maxRetriesPerRequest: 1 })
  c.on('error', () => undefined)
  clients.push(c)
  return c
}

const prefix = () => `aegis-test:${randomUUID()}:`

const statusOf = async (url: string): Promise<number> => {
  const r = await fetch(url)
  await r.arrayBuffer()
  return r.status
}

/** `n` requests at once, spread over the given servers. */
const burst = (n: number, urls: string[]): Promise<number[]> =>
  Promise.all(Array.from({ length: n }, (_, i) => statusOf(urls[i % urls.length] as string)))

const count = (statuses: number[], status: number) => statuses.filter((s) => s === status).length

const waitFor = async (condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> => {
  const start = performance.now()
  while (!(await condition())) {
    if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return performance.now() - start
}

const memoryLogger = () => {
  const lines: { level: string; msg: string | undefined }[] = []
  const log = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg })
  const logger: Logger = { info: log('info'), warn: log('warn'), error: log('error') }
  return { logger, lines }
}

afterEach(async () => {
  for (const s of running.splice(0)) {
    await s.aegis.close()
    s.server.closeAllConnections()
    await new Promise((r) => s.server.close(r))
  }
  for (const c of clients.splice(0)) c.disconnect()
  for (const r of owned.splice(0)) await r.stop()
})

describe('limiter on Redis', () => {
  it('1,000 simultaneous requests against a limit of 100 admit exactly 100 — memory, one instance', async () => {
    const a = await serve({ limiter: { points: 100, duration: 3600 } })
    const statuses = await burst(1000, [a.url])
    expect(count(statuses, 200)).toBe(100)
    expect(count(statuses, 429)).toBe(900)
  })

  it('1,000 simultaneous requests against a limit of 100 admit exactly 100 — Redis, two instances', async () => {
    const store = { redis: inject('redisUrl'), prefix: prefix(), commandTimeout: 2_000 }
    const a = await serve({ store, limiter: { points: 100, duration: 3600 } })
    const b = await serve({ store, limiter: { points: 100, duration: 3600 } })
    await waitFor(() => a.aegis.store?.up === true && b.aegis.store?.up === true, 5_000)
    const statuses = await burst(1000, [a.url, b.url])
    expect(count(statuses, 200)).toBe(100)
    expect(count(statuses, 429)).toBe(900)
    // Both decided through Redis: nothing fell back to memory.
    const scraped = (await a.aegis.scrapeMetrics())?.body ?? ''
    expect(scraped).not.toMatch(/aegis_limiter_insurance_total\{/)
  })

  it('the Lua script and the memory store agree, policy by policy (bans, routes, penalty, reward, get, reset)', async () => {
    const limiter = {
      points: 4,
      duration: 60,
      routes: { 'POST /login': { points: 2, duration: 60, blockDuration: 30 } },
    }
    const mem = await serve({ limiter })
    const red = await serve({ store: { redis: inject('redisUrl'), prefix: prefix() }, limiter })
    await waitFor(() => red.aegis.store?.up === true, 5_000)
    const run = async (s: Served) => {
      const seen: string[] = []
      for (const [method, path] of [
        ['GET', '/'],
        ['POST', '/login'],
        ['POST', '/login'],
        ['POST', '/login'],
        ['POST', '/login'],
        ['GET', '/'],
        ['GET', '/'],
        ['GET', '/'],
        ['GET', '/'],
      ] as const) {
        const r = await fetch(`${s.url}${path}`, { method })
        await r.arrayBuffer()
        seen.push(`${r.status} ${r.headers.get('ratelimit')} ${r.headers.get('retry-after')}`)
      }
      const status = await s.aegis.limiter?.get('127.0.0.1', 'POST /login')
      await s.aegis.limiter?.reset('127.0.0.1')
      const afterReset = await s.aegis.limiter?.get('127.0.0.1')
      return { seen, status, afterReset }
    }
    const a = await run(mem)
    const b = await run(red)
    expect(b.seen).toEqual(a.seen)
    expect(a.seen[3]).toBe('429 "default";r=1;t=45, "POST /login";r=0;t=30 30')
    expect(b.status).toMatchObject({ policy: 'POST /login', banned: true, remaining: 0 })
    expect(a.status).toMatchObject({ policy: 'POST /login', banned: true, remaining: 0 })
    expect(b.afterReset).toBeUndefined()
    expect(a.afterReset).toBeUndefined()
  })

  it('keys of one client share a Cluster hash slot; penalty and reward move its bucket', async () => {
    const store = { redis: inject('redisUrl'), prefix: prefix() }
    const a = await serve({
      store,
      limiter: { points: 10, duration: 60, routes: { '/x': { points: 5, duration: 60 } } },
    })
    await waitFor(() => a.aegis.store?.up === true, 5_000)
    expect(await statusOf(`${a.url}/x`)).toBe(200)
    const redis = client(inject('redisUrl'))
    const keys = (await redis.keys(`${store.prefix}*`)).sort()
    expect(keys).toEqual([`${store.prefix}rl:{127.0.0.1}:/x`, `${store.prefix}rl:{127.0.0.1}:default`])
    // penalty / reward act on the keys of a request Aegis admitted.
    const req = {
      socket: { remoteAddress: '127.0.0.1' },
      headers: { host: 'example.com' },
      rawHeaders: ['Host', 'example.com'],
      url: '/x',
      method: 'GET',
      httpVersion: '1.1',
    }
    await expect(a.aegis.limiter?.penalty(req as never, 3)).rejects.toThrow(/admitted/)
    await a.aegis.admit(req as never)
    await a.aegis.limiter?.penalty(req as never, 3)
    expect(await a.aegis.limiter?.get('127.0.0.1', '/x')).toMatchObject({ remaining: 0 })
    await a.aegis.limiter?.reward(req as never, 2)
    expect(await a.aegis.limiter?.get('127.0.0.1', '/x')).toMatchObject({ remaining: 2 })
    expect(await a.aegis.limiter?.get('127.0.0.1')).toMatchObject({ remaining: 7 })
  })

  it.each(['kill', 'pause'] as const)(
    'Redis %s mid-load: no request fails or waits past the command timeout, limits hold per instance, Redis is used again within 5 s',
    async (fault) => {
      const redisServer = await startRedisServer()
      owned.push(redisServer)
      const { logger, lines } = memoryLogger()
      const commandTimeout = 100
      const store = { redis: redisServer.url, prefix: prefix(), commandTimeout, probeInterval: 200 }
      // 40 points a minute: a few seconds of load spends them, so refusals show the limit holds.
      const limiter = { points: 40, duration: 60 }
      const a = await serve({ store, limiter, logger })
      await waitFor(() => a.aegis.store?.up === true, 5_000)

      const statuses: number[] = []
      let stop = false
      const load = (async () => {
        while (!stop) {
          statuses.push(...(await burst(4, [a.url])))
          await new Promise((r) => setTimeout(r, 10))
        }
      })()
      await new Promise((r) => setTimeout(r, 300))
      const admittedBefore = count(statuses, 200)

      const admin = client(redisServer.url)
      if (fault === 'kill') {
        redisServer.process.kill('SIGKILL')
        await once(redisServer.process, 'exit')
      } else {
        await admin.call('CLIENT', 'PAUSE', '1500', 'ALL')
      }
      await waitFor(() => a.aegis.store?.up === false, 2_000)
      await new Promise((r) => setTimeout(r, 1_000))
      const duringOutage = statuses.length
      // Insurance keeps the limit: the memory bucket starts full, so at most `points` more pass.
      expect(count(statuses, 200) - admittedBefore).toBeLessThanOrEqual(limiter.points)

      let back = performance.now()
      if (fault === 'kill') {
        const restarted = await startRedisServer([], redisServer.port)
        owned.push(restarted)
        back = performance.now()
      } else {
        await waitFor(async () => (await admin.ping().catch(() => '')) === 'PONG', 3_000)
        back = performance.now()
      }
      const recovery = await waitFor(() => a.aegis.store?.up === true, 5_000)
      expect(recovery).toBeLessThan(5_000)
      await new Promise((r) => setTimeout(r, 300))
      stop = true
      await load

      // Every request got an answer from the limiter: admitted or refused, never an error.
      expect(statuses.length).toBeGreaterThan(duringOutage)
      expect(statuses.every((s) => s === 200 || s === 429)).toBe(true)
      expect(count(statuses, 429)).toBeGreaterThan(0)
      // No admission waited longer than the command timeout (plus event-loop slack).
      expect(Math.max(...a.waits)).toBeLessThan(commandTimeout + 50)
      // Redis decides again: the client's bucket is back in Redis.
      const check = client(redisServer.url)
      await statusOf(`${a.url}/`)
      expect(await check.exists(`${store.prefix}rl:{127.0.0.1}:default`)).toBe(1)
      // Logged once for the outage, once for the recovery.
      expect(lines.filter((l) => l.msg?.startsWith('Redis unavailable'))).toHaveLength(1)
      expect(lines.filter((l) => l.msg?.startsWith('Redis is back'))).toHaveLength(1)
      const scraped = (await a.aegis.scrapeMetrics())?.body ?? ''
      expect(scraped).toMatch(/aegis_limiter_insurance_total\{policy="default"\} [1-9]/)
      expect(scraped).toMatch(/aegis_store_up\{store="redis"\} 1/)
      expect(performance.now() - back).toBeGreaterThan(0)
    },
    30_000,
  )

  it('failClosed answers 503 while Redis is down', async () => {
    const redisServer = await startRedisServer()
    owned.push(redisServer)
    const a = await serve({
      store: { redis: redisServer.url, prefix: prefix(), commandTimeout: 100 },
      limiter: { points: 10, duration: 60, failClosed: true },
    })
    await waitFor(() => a.aegis.store?.up === true, 5_000)
    expect(await statusOf(`${a.url}/`)).toBe(200)
    await redisServer.stop()
    await waitFor(() => a.aegis.store?.up === false, 2_000)
    const r = await fetch(`${a.url}/`)
    expect(r.status).toBe(503)
    expect(r.headers.get('retry-after')).toBe('1')
    expect(await r.json()).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#temporary-reduced-capacity',
      code: 'AEGIS_ERR_LIMITER_UNAVAILABLE',
    })
  })

  it('without a logger, an unreachable Redis is one process warning; requests are decided in memory', async () => {
    const warnings: Error[] = []
    const onWarning = (w: Error) => void warnings.push(w)
    process.on('warning', onWarning)
    try {
      const port = await freePort()
      const a = await serve({
        store: { redis: `redis://127.0.0.1:${port}`, prefix: prefix() },
        limiter: { points: 2, duration: 60 },
      })
      expect(await burst(3, [a.url])).toEqual(expect.arrayContaining([200, 200, 429]))
      await new Promise((r) => setTimeout(r, 300))
      const ours = warnings.filter((w) => (w as Error & { code?: string }).code === 'AEGIS_WARN_STORE_DOWN')
      expect(ours).toHaveLength(1)
      expect(ours[0]?.message).toMatch(/^Redis unreachable/)
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('a client passed in is duplicated with safe settings and left alone', async () => {
    const mine = new Redis(inject('redisUrl'), { enableOfflineQueue: true, commandTimeout: undefined })
    clients.push(mine)
    const a = await serve({ store: { redis: mine, prefix: prefix() }, limiter: { points: 3, duration: 60 } })
    const conn = a.aegis.store
    expect(conn?.client).not.toBe(mine)
    expect((conn?.client as Redis).options).toMatchObject({
      commandTimeout: 100,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      enableAutoPipelining: true,
    })
    expect(mine.options.enableOfflineQueue).toBe(true)
    await waitFor(() => conn?.up === true, 5_000)
    expect(await burst(4, [a.url])).toEqual(expect.arrayContaining([200, 200, 200, 429]))
    await a.aegis.close()
    expect(mine.status).toBe('ready')
  })

  it('fixed-window policies run on rate-limiter-flexible, on Redis, with its insurance', async () => {
    const redisServer = await startRedisServer()
    owned.push(redisServer)
    const a = await serve({
      store: { redis: redisServer.url, prefix: prefix(), commandTimeout: 100 },
      limiter: { points: 3, duration: 60, algorithm: 'fixed-window' },
    })
    await waitFor(() => a.aegis.store?.up === true, 5_000)
    const first = await burst(4, [a.url])
    expect(count(first, 200)).toBe(3)
    const check = client(redisServer.url)
    expect(await check.keys('*fw:default*')).toHaveLength(1)
    check.disconnect()
    await redisServer.stop()
    // Down: the memory insurance decides (a fresh window per instance), nothing fails.
    const during = await burst(5, [a.url])
    expect(during.every((s) => s === 200 || s === 429)).toBe(true)
    expect(count(during, 200)).toBeLessThanOrEqual(3)
  })
})

describe('limiter on Redis: before the first connection (store.startupWait)', () => {
  const scrape = async (s: Served): Promise<string> => (await s.aegis.scrapeMetrics())?.body ?? ''
  const paused = async (): Promise<RedisServer> => {
    const redisServer = await startRedisServer()
    owned.push(redisServer)
    // A stopped process: the kernel still accepts the TCP connection, nothing answers.
    redisServer.process.kill('SIGSTOP')
    return redisServer
  }
  const resume = (redisServer: RedisServer): void => void redisServer.process.kill('SIGCONT')
  afterEach(() => {
    // Let stop() reach processes a test left stopped.
    for (const r of owned) r.process.kill('SIGCONT')
  })

  it('two instances started together on a fresh Redis, 40 requests fired at construction: exactly 20 of a shared 20 admitted', async () => {
    const redisServer = await startRedisServer()
    owned.push(redisServer)
    const { logger, lines } = memoryLogger()
    const store = { redis: redisServer.url, prefix: prefix(), commandTimeout: 1_000 }
    const limiter = { points: 20, duration: 3600 }
    const [a, b] = await Promise.all([serve({ store, limiter, logger }), serve({ store, limiter, logger })])
    const startingAtFire = [a.aegis.store?.starting, b.aegis.store?.starting]
    const statuses = await burst(40, [a.url, b.url])
    expect(count(statuses, 200)).toBe(20)
    expect(count(statuses, 429)).toBe(20)
    // The requests really came before the first connection, and nothing fell back.
    expect(startingAtFire).toEqual([true, true])
    for (const s of [a, b]) expect(await scrape(s)).not.toMatch(/aegis_limiter_insurance_total\{/)
    expect(lines.filter((l) => l.level !== 'info')).toEqual([])
  })

  it('a Redis slow to answer at startup (paused 300 ms): every decision waits for it, then Redis decides them all', async () => {
    const redisServer = await paused()
    const { logger, lines } = memoryLogger()
    const store = { redis: redisServer.url, prefix: prefix(), commandTimeout: 1_000, startupWait: 2_000 }
    const limiter = { points: 20, duration: 3600 }
    const [a, b] = await Promise.all([serve({ store, limiter, logger }), serve({ store, limiter, logger })])
    setTimeout(() => resume(redisServer), 300)
    const statuses = await burst(40, [a.url, b.url])
    expect(count(statuses, 200)).toBe(20)
    expect(count(statuses, 429)).toBe(20)
    // They waited for the connection (at least until the resume), never past startupWait.
    const waits = [...a.waits, ...b.waits]
    expect(Math.min(...waits)).toBeGreaterThan(200)
    expect(Math.max(...waits)).toBeLessThan(store.startupWait)
    for (const s of [a, b]) expect(await scrape(s)).not.toMatch(/aegis_limiter_insurance_total\{/)
    expect(lines.filter((l) => l.level !== 'info')).toEqual([])
  })

  it('a Redis that hangs at startup: decisions wait startupWait, then fall back to memory (limit 5 of 10), logged; Redis decides once it answers', async () => {
    const redisServer = await paused()
    const { logger, lines } = memoryLogger()
    const startupWait = 500
    const store = { redis: redisServer.url, prefix: prefix(), commandTimeout: 100, startupWait }
    const a = await serve({ store, limiter: { points: 5, duration: 3600 }, logger })
    const statuses = await burst(10, [a.url])
    expect(count(statuses, 200)).toBe(5)
    expect(count(statuses, 429)).toBe(5)
    // Each waited for Redis, no longer than startupWait (plus event-loop slack).
    expect(Math.min(...a.waits)).toBeGreaterThan(startupWait - 100)
    expect(Math.max(...a.waits)).toBeLessThan(startupWait + 150)
    const warned = lines.filter((l) => l.level === 'warn')
    expect(warned.map((l) => l.msg)).toEqual([
      `Redis unreachable (no connection within startupWait, ${startupWait} ms): deciding in memory (insurance) until it answers`,
    ])
    expect(await scrape(a)).toMatch(/aegis_limiter_insurance_total\{policy="default"\} 10/)

    // Once Redis answers it decides again, from its own count: at most the limit while reachable.
    resume(redisServer)
    await waitFor(() => a.aegis.store?.up === true, 8_000)
    expect(lines.filter((l) => l.msg?.startsWith('Redis is back'))).toHaveLength(1)
    const after = await burst(10, [a.url])
    expect(count(after, 200)).toBe(5)
    expect(await client(redisServer.url).exists(`${store.prefix}rl:{127.0.0.1}:default`)).toBe(1)
  }, 20_000)

  it('failClosed: a Redis that hangs at startup answers 503 problem+json after startupWait, and the log says 503', async () => {
    const redisServer = await paused()
    const { logger, lines } = memoryLogger()
    const a = await serve({
      store: { redis: redisServer.url, prefix: prefix(), commandTimeout: 100, startupWait: 300 },
      limiter: { points: 5, duration: 3600, failClosed: true },
      logger,
    })
    const r = await fetch(`${a.url}/`)
    expect(r.status).toBe(503)
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    expect(r.headers.get('retry-after')).toBe('1')
    expect(await r.json()).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#temporary-reduced-capacity',
      code: 'AEGIS_ERR_LIMITER_UNAVAILABLE',
    })
    expect(a.waits[0]).toBeGreaterThan(200)
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
      'Redis unreachable (no connection within startupWait, 300 ms): answering 503 (limiter failClosed) until it answers',
    ])
  })

  it('a refused connection ends the wait at once; the log names what each policy does', async () => {
    const { logger, lines } = memoryLogger()
    const port = await freePort()
    const a = await serve({
      store: { redis: `redis://127.0.0.1:${port}`, prefix: prefix(), startupWait: 5_000 },
      limiter: {
        points: 2,
        duration: 60,
        routes: { 'POST /login': { points: 1, duration: 60, failClosed: true } },
      },
      logger,
    })
    expect(await burst(3, [a.url])).toEqual(expect.arrayContaining([200, 200, 429]))
    expect(Math.max(...a.waits)).toBeLessThan(1_000)
    const login = await fetch(`${a.url}/login`, { method: 'POST' })
    expect(login.status).toBe(503)
    await login.arrayBuffer()
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
      'Redis unreachable: answering 503 for the failClosed policies ("POST /login"), deciding the others in memory (insurance) until it answers',
    ])
  })
})
