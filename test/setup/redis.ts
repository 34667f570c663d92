/**
 * Vitest global setup: find a Redis for the run and publish it as REDIS_URL.
 *
 * 1. REDIS_URL when set;
 * 2. else the server on 127.0.0.1:6379 when it answers PING;
 * 3. else a throwaway `redis-server` on a free port, stopped after the run.
 *
 * Tests that kill or pause Redis start their own server with `startRedisServer`
 * (test/helpers/redis.ts) and never touch this one. Tests use a unique key
 * prefix and never flush a database.
 */
import type {} from 'vitest'
import type { TestProject } from 'vitest/node'
import { pingRedis, startRedisServer, type RedisServer } from '../helpers/redis.js'

let owned: RedisServer | undefined

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let url = process.env.REDIS_URL || undefined
  if (url === undefined) {
    if (await pingRedis('redis://127.0.0.1:6379')) url = 'redis://127.0.0.1:6379'
    else {
      try {
        owned = await startRedisServer()
        url = owned.url
      } catch (err) {
        throw new Error(
          `No Redis for the tests: REDIS_URL is unset, nothing answers on 127.0.0.1:6379, and starting redis-server failed (${(err as Error).message}). ` +
            'Install it (Debian: apt-get install redis-server), start one, or set REDIS_URL=redis://host:port.',
          { cause: err },
        )
      }
    }
  }
  project.provide('redisUrl', url)
  process.env.REDIS_URL = url
  return async () => {
    await owned?.stop()
    owned = undefined
  }
}

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string
  }
}
