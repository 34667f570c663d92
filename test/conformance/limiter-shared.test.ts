/**
 * One global limit shared by three app instances in separate processes: on the
 * run's Redis server, and on a real local Redis Cluster of three masters.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest'
import { useRedisCluster } from '../helpers/redis-cluster.js'

const fixture = fileURLToPath(new URL('../fixtures/limited-app.mjs', import.meta.url))
const built = fileURLToPath(new URL('../../packages/express/dist/index.js', import.meta.url))

const POINTS = 1000
const DURATION = 3600
const REQUESTS = 3000

let children: ChildProcess[] = []

async function startInstance(options: object): Promise<{ url: string; child: ChildProcess }> {
  const child = fork(fixture, [], {
    env: { ...process.env, AEGIS_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  })
  children.push(child)
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('instance did not start within 10 s')), 10_000)
    child.once('exit', (code) => reject(new Error(`instance exited with ${code}`)))
    child.stdout?.once('data', (d: Buffer) => {
      clearTimeout(timer)
      resolve(Number(d.toString().trim()))
    })
  })
  return { url: `http://127.0.0.1:${port}/`, child }
}

/** `total` requests, `concurrency` at a time, round-robin over the instances. */
async function load(urls: string[], total: number, concurrency: number): Promise<number[]> {
  const statuses: number[] = []
  let next = 0
  const worker = async () => {
    while (next < total) {
      const i = next++
      const r = await fetch(urls[i % urls.length] as string)
      await r.arrayBuffer()
      statuses.push(r.status)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return statuses
}

async function sharedLimit(store: object): Promise<void> {
  const options = {
    store: { ...store, prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 1_000 },
    limiter: { points: POINTS, duration: DURATION },
    // Every request comes from 127.0.0.1: one bucket, shared by the three instances.
    trustProxy: ['loopback'],
  }
  const instances = await Promise.all([
    startInstance(options),
    startInstance(options),
    startInstance(options),
  ])
  const urls = instances.map((i) => i.url)
  // Let each instance connect before the clock starts.
  await new Promise((r) => setTimeout(r, 500))
  const started = performance.now()
  const statuses = await load(urls, REQUESTS, 30)
  const seconds = (performance.now() - started) / 1000
  const admitted = statuses.filter((s) => s === 200).length
  expect(statuses.every((s) => s === 200 || s === 429)).toBe(true)
  // The bucket refills POINTS per DURATION while the run lasts.
  const refill = Math.ceil((seconds * POINTS) / DURATION)
  expect(admitted).toBeGreaterThanOrEqual(POINTS)
  expect(admitted).toBeLessThanOrEqual(POINTS + refill)
  expect(Math.abs(admitted - POINTS) / POINTS).toBeLessThanOrEqual(0.02)
}

beforeAll(() => {
  if (!existsSync(built))
    throw new Error('these tests run the built packages: run `pnpm build` first (`pnpm test` does)')
})

afterEach(async () => {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve()
          const timer = setTimeout(() => c.kill('SIGKILL'), 3_000)
          c.once('exit', () => {
            clearTimeout(timer)
            resolve()
          })
          c.kill('SIGTERM')
        }),
    ),
  )
  children = []
})

describe('one global limit across three processes', () => {
  it(`Redis: ${REQUESTS} requests against ${POINTS} admit ${POINTS} (within 2%)`, async () => {
    await sharedLimit({ redis: inject('redisUrl') })
  }, 60_000)

  describe('Redis Cluster (3 masters)', () => {
    const nodes = useRedisCluster()

    it(`${REQUESTS} requests against ${POINTS} admit ${POINTS} (within 2%)`, async () => {
      await sharedLimit({ cluster: nodes() })
    }, 60_000)
  })
})
