/**
 * Shared limits hold from the first request (issue 14, finding 6): until the first
 * connection to Redis, decisions wait for it (at most `store.startupWait`) rather
 * than each instance deciding in memory with the whole limit to itself. Redis is a
 * throwaway server held stopped (SIGSTOP) for the first 300 ms, so every request
 * below arrives before the first connection, on Express, Fastify and Koa.
 */
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions, Logger } from '@aegis/core'
import { startRedisServer, type RedisServer } from '../helpers/redis.js'
import { adapters, type TestApp } from './apps.js'

const memoryLogger = () => {
  const lines: { level: string; msg: string | undefined }[] = []
  const log = (level: string) => (_obj: object, msg?: string) => void lines.push({ level, msg })
  const logger: Logger = { info: log('info'), warn: log('warn'), error: log('error') }
  return { logger, lines }
}

const statusOf = async (url: string): Promise<number> => {
  const r = await fetch(url)
  await r.arrayBuffer()
  return r.status
}

describe.each(adapters)('%s: shared limits at startup', (_name, make) => {
  let apps: TestApp[] = []
  let redis: RedisServer | undefined

  afterEach(async () => {
    redis?.process.kill('SIGCONT')
    await Promise.all(apps.map((a) => a.close()))
    await redis?.stop()
    apps = []
    redis = undefined
  })

  it('two instances started together, Redis not answering yet: exactly 20 of a shared 20 admitted across 40 requests', async () => {
    redis = await startRedisServer()
    redis.process.kill('SIGSTOP')
    const { logger, lines } = memoryLogger()
    const options: AegisOptions = {
      store: { redis: redis.url, prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 1_000 },
      limiter: { points: 20, duration: 3600 },
      logger,
    }
    apps = await Promise.all([make(options), make(options)])
    expect(apps.map((a) => a.core.store?.starting)).toEqual([true, true])
    const paused = redis
    setTimeout(() => paused.process.kill('SIGCONT'), 300)
    const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => statusOf(`${apps[i % 2]!.url}/`)))
    expect(statuses.filter((s) => s === 200)).toHaveLength(20)
    expect(statuses.filter((s) => s === 429)).toHaveLength(20)
    for (const a of apps) {
      const metrics = (await a.core.scrapeMetrics())?.body ?? ''
      expect(metrics).not.toMatch(/aegis_limiter_insurance_total\{/)
    }
    expect(lines.filter((l) => l.level !== 'info')).toEqual([])
  })
})
