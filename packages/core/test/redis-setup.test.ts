import { describe, expect, inject, it } from 'vitest'
import { pingRedis, startRedisServer } from '../../../test/helpers/redis.js'

// The test setup finds a Redis for the run (REDIS_URL, 127.0.0.1:6379, or a
// throwaway redis-server). Engines that share state through Redis build on this.
describe('test Redis', () => {
  it('the run has a Redis that answers', async () => {
    const url = inject('redisUrl')
    expect(url).toMatch(/^redis:\/\//)
    expect(await pingRedis(url)).toBe(true)
  })

  it('tests that kill Redis get a server of their own', async () => {
    const own = await startRedisServer()
    expect(own.url).not.toBe(inject('redisUrl'))
    expect(await pingRedis(own.url)).toBe(true)
    await own.stop()
    expect(await pingRedis(own.url)).toBe(false)
    expect(await pingRedis(inject('redisUrl'))).toBe(true)
  })
})
