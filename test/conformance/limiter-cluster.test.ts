/**
 * Limits shared through a real Redis Cluster (3 masters) by two instances of the
 * same app, on Express, Fastify and Koa, under concurrent traffic from many
 * clients whose keys hash to different slots (issue 14, finding 3).
 *
 * ioredis' auto-pipelining groups commands by the slot of a command's first
 * key; a script defined without `numberOfKeys` has the key count as its first
 * argument, so concurrent decisions for different clients shared one pipeline
 * and the cluster refused it: store errors, then the memory insurance deciding,
 * each instance on its own. Every decision here must go through Redis.
 */
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions, Logger } from '@aegis/core'
import { useRedisCluster } from '../helpers/redis-cluster.js'
import { adapters, type TestApp } from './apps.js'

const CLIENTS = 40
const REQUESTS_PER_CLIENT = 20
const POINTS = 5

interface Line {
  level: string
  msg: string | undefined
}
const memoryLogger = (): { logger: Logger; lines: Line[] } => {
  const lines: Line[] = []
  const log = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg })
  return { logger: { info: log('info'), warn: log('warn'), error: log('error') }, lines }
}

/** Client `i`'s address as a trusted proxy forwards it: 40 clients, 40 keys, slots all over the cluster. */
const clientIp = (i: number): string => `203.0.113.${i + 1}`

const statusOf = async (url: string, headers: Record<string, string>): Promise<number> => {
  const r = await fetch(url, { headers })
  await r.arrayBuffer()
  return r.status
}

const scrape = async (app: TestApp): Promise<string> => (await app.core.scrapeMetrics())?.body ?? ''

/** Nothing fell back: no store error, no insurance decision, no outage logged. */
async function expectEveryDecisionShared(apps: TestApp[], lines: Line[]): Promise<void> {
  for (const app of apps) {
    const metrics = await scrape(app)
    expect(metrics).not.toMatch(/aegis_store_errors_total\{/)
    expect(metrics).not.toMatch(/aegis_limiter_insurance_total\{/)
    expect(metrics).toMatch(/aegis_store_up\{store="redis"\} 1/)
  }
  expect(lines.filter((l) => l.level !== 'info')).toEqual([])
}

describe.each(adapters)('%s: limits shared through a Redis Cluster', (_name, make) => {
  const nodes = useRedisCluster()
  let apps: TestApp[] = []

  afterEach(async () => {
    await Promise.all(apps.map((a) => a.close()))
    apps = []
  })

  async function startTwo(options: AegisOptions, logger: Logger): Promise<TestApp[]> {
    const store = { cluster: nodes(), prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 1_000 }
    apps = await Promise.all([0, 1].map(() => make({ ...options, store, logger })))
    // Connected first: what happens before the first connection is another test's (limiter-startup).
    for (let i = 0; i < 250 && !apps.every((a) => a.core.store?.up === true); i++)
      await new Promise((r) => setTimeout(r, 20))
    return apps
  }

  it(`${CLIENTS} clients × ${REQUESTS_PER_CLIENT} requests at once on 2 instances, ${POINTS} a minute: exactly ${CLIENTS * POINTS} admitted, no store error`, async () => {
    const { logger, lines } = memoryLogger()
    const [a, b] = await startTwo(
      { trustProxy: ['loopback'], limiter: { points: POINTS, duration: 60 } },
      logger,
    )
    const requests: Promise<number>[] = []
    for (let c = 0; c < CLIENTS; c++)
      for (let r = 0; r < REQUESTS_PER_CLIENT; r++)
        requests.push(statusOf(`${(r % 2 === 0 ? a : b)!.url}/`, { 'x-forwarded-for': clientIp(c) }))
    const statuses = await Promise.all(requests)
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true)
    expect(statuses.filter((s) => s === 200)).toHaveLength(CLIENTS * POINTS)
    // Per client too: each one got exactly its own limit.
    for (let c = 0; c < CLIENTS; c++) {
      const mine = statuses.slice(c * REQUESTS_PER_CLIENT, (c + 1) * REQUESTS_PER_CLIENT)
      expect(mine.filter((s) => s === 200)).toHaveLength(POINTS)
    }
    await expectEveryDecisionShared([a!, b!], lines)
  }, 60_000)

  it("one client, a route policy whose key() differs from the default policy's: both limits hold, no store error", async () => {
    const { logger, lines } = memoryLogger()
    // The route's buckets are keyed by user, the default's by address: two hash tags, two slots,
    // decided by two scripts at once for one request.
    const [a, b] = await startTwo(
      {
        limiter: {
          points: 100,
          duration: 60,
          routes: {
            'POST /login': {
              points: POINTS,
              duration: 60,
              key: (req) => req.headers['x-user'] as string | undefined,
            },
          },
        },
      },
      logger,
    )
    const statuses = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const r = await fetch(`${(i % 2 === 0 ? a : b)!.url}/login`, {
          method: 'POST',
          headers: { 'x-user': 'alice' },
        })
        await r.arrayBuffer()
        return r.status
      }),
    )
    expect(statuses.filter((s) => s === 200)).toHaveLength(POINTS)
    expect(statuses.filter((s) => s === 429)).toHaveLength(20 - POINTS)
    // The default policy charged the address for the admitted requests only (all or nothing).
    expect(await a!.core.limiter?.get('127.0.0.1')).toMatchObject({ remaining: 100 - POINTS })
    expect(await b!.core.limiter?.get('alice', 'POST /login')).toMatchObject({ remaining: 0 })
    await expectEveryDecisionShared([a!, b!], lines)
  }, 60_000)
})
