/**
 * The limiter's heavy hitters (issue 18): `limiter.top()` by refusals and by share of the
 * limit, over a real server on loopback, with the memory store and with a real Redis; and
 * the Space-Saving summary behind it against exact counts.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { AegisArgumentError, createAegis, type Aegis, type AegisOptions } from '../src/index.js'
import { createTopKeys, SpaceSaving } from '../src/limiter/top.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { waitFor } from '../../../test/helpers/wait.js'

failOnUncaught()

const open: Aegis[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()))
})

async function serve(options: AegisOptions): Promise<{ core: Aegis; url: string }> {
  const core = createAegis({ anomaly: false, metrics: false, ...options })
  open.push(core)
  const server = createServer(
    core.handler((_req, res) => {
      res.end('ok')
    }),
  )
  core.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  if (core.store !== undefined) await waitFor('the store', () => core.store?.up === true, 3000)
  return { core, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** `count` requests as user `user`, ten at a time; the statuses seen. */
async function send(url: string, user: string, count: number): Promise<number[]> {
  const statuses: number[] = []
  for (let sent = 0; sent < count; sent += 10) {
    const batch = Array.from({ length: Math.min(10, count - sent) }, async () => {
      const r = await fetch(`${url}/x`, { headers: { 'x-user': user } })
      await r.arrayBuffer()
      return r.status
    })
    statuses.push(...(await Promise.all(batch)))
  }
  return statuses
}

const byUser = (req: { headers: Record<string, unknown> }): string => String(req.headers['x-user'])

const stores: [string, () => AegisOptions][] = [
  ['memory', () => ({})],
  ['Redis', () => ({ store: { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` } })],
]

describe.each(stores)('limiter.top() (%s)', (_name, storeOptions) => {
  it('ranks keys by refusals in the window, exactly while fewer than 100 keys were refused', async () => {
    const { core, url } = await serve({
      ...storeOptions(),
      limiter: { points: 5, duration: 3600, key: byUser },
    })
    // u<i> sends 4(i+1) requests against a burst of 5: 4(i+1) − 5 refusals from u1 on.
    for (let i = 0; i < 10; i++) {
      const statuses = await send(url, `u${i}`, 4 * (i + 1))
      expect(statuses.filter((s) => s === 429).length).toBe(Math.max(0, 4 * (i + 1) - 5))
    }
    const top = await core.limiter!.top({ by: 'limited', n: 3 })
    expect(JSON.parse(JSON.stringify(top))).toEqual(top)
    expect(top).toMatchObject({ by: 'limited', policy: null, windowMs: 60_000, scope: 'instance' })
    expect(top.keys).toEqual([
      {
        policy: 'default',
        key: 'u9',
        limited: 35,
        limitedError: 0,
        share: 1,
        limit: 5,
        remaining: 0,
        resetMs: expect.any(Number),
        retryMs: expect.any(Number),
        banned: false,
      },
      expect.objectContaining({ key: 'u8', limited: 31, share: 1 }),
      expect.objectContaining({ key: 'u7', limited: 27, share: 1 }),
    ])
    expect(top.keys[0]!.retryMs).toBeGreaterThan(0)
    const all = await core.limiter!.top({ n: 100, policy: 'default' })
    expect(all.keys.map((k) => [k.key, k.limited])).toEqual(
      Array.from({ length: 9 }, (_, j) => [`u${9 - j}`, 4 * (10 - j) - 5]),
    )
    // A key cleared shows its full bucket, and is no longer among the largest shares.
    await core.limiter!.reset('u9')
    const after = await core.limiter!.top({ by: 'limited', n: 1 })
    expect(after.keys[0]).toMatchObject({ key: 'u9', limited: 35, share: 0, remaining: 5 })
    const shares = await core.limiter!.top({ by: 'share', n: 100 })
    expect(shares.keys.map((k) => k.key)).not.toContain('u9')
    expect(shares.keys.slice(0, 2).map((k) => [k.key, k.share])).toEqual([
      ['u8', 1],
      ['u7', 1],
    ])
  })

  it('ranks keys by the share of the limit they use now, from sampled admissions', async () => {
    const { core, url } = await serve({
      ...storeOptions(),
      limiter: { points: 1000, duration: 3600, key: byUser },
    })
    await send(url, 'heavy', 200)
    await send(url, 'mid', 100)
    await send(url, 'light', 40)
    const top = await core.limiter!.top({ by: 'share', n: 3 })
    expect(top.keys.map((k) => k.key)).toEqual(['heavy', 'mid', 'light'])
    expect(top.keys[0]!.share).toBeCloseTo(0.2, 2)
    expect(top.keys[1]!.share).toBeCloseTo(0.1, 2)
    expect(top.keys[2]!.share).toBeCloseTo(0.04, 2)
    expect(top.keys[0]).toMatchObject({ limited: 0, limit: 1000, banned: false })
    expect((await core.limiter!.top({ by: 'limited' })).keys).toEqual([])
  })
})

describe('limiter.top() arguments', () => {
  it('refuses what it cannot answer, with AegisArgumentError', async () => {
    const { core } = await serve({ limiter: { routes: { 'POST /login': { points: 5, duration: 60 } } } })
    const limiter = core.limiter!
    await expect(limiter.top({ by: 'bytes' as 'share' })).rejects.toThrow(AegisArgumentError)
    await expect(limiter.top({ n: 0 })).rejects.toThrow(/n is an integer from 1 to 100/)
    await expect(limiter.top({ n: 101 })).rejects.toThrow(AegisArgumentError)
    await expect(limiter.top({ policy: 'nope' })).rejects.toMatchObject({ code: 'AEGIS_ERR_NOT_FOUND' })
    expect(await limiter.top({ policy: 'POST /login' })).toMatchObject({ policy: 'POST /login', keys: [] })
  })
})

describe('the Space-Saving summary', () => {
  it('never undercounts, overcounts by at most its error, and finds the true heavy hitters of a skewed stream', () => {
    // A Zipf-like stream over 2,000 keys, shuffled deterministically.
    const stream: string[] = []
    for (let k = 1; k <= 2000; k++) for (let c = 0; c < Math.ceil(5000 / k); c++) stream.push(`k${k}`)
    let seed = 42
    for (let i = stream.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      const j = seed % (i + 1)
      ;[stream[i], stream[j]] = [stream[j]!, stream[i]!]
    }
    const exact = new Map<string, number>()
    const summary = new SpaceSaving(100)
    for (const key of stream) {
      exact.set(key, (exact.get(key) ?? 0) + 1)
      summary.add(key)
    }
    expect(summary.size).toBe(100)
    for (const { key, count, error } of summary.entries()) {
      const truth = exact.get(key) ?? 0
      expect(count).toBeGreaterThanOrEqual(truth)
      expect(count - error).toBeLessThanOrEqual(truth)
    }
    const top10 = summary
      .entries()
      .sort((a, b) => b.count - a.count)
      .slice(0, 10)
      .map((e) => e.key)
    expect(top10).toEqual(Array.from({ length: 10 }, (_, i) => `k${i + 1}`))
  })
})

describe('the refusal window', () => {
  it('counts the current window and the part of the previous one still inside the last minute', () => {
    const t0 = performance.now()
    const top = createTopKeys(1, 60_000)
    for (let i = 0; i < 4; i++) top.refused(0, 'a', t0)
    expect(
      top
        .policy(0)
        .limited(t0 + 30_000)
        .get('a'),
    ).toEqual({ count: 4, error: 0 })
    top.refused(0, 'a', t0 + 75_000)
    // 15 s into the next window: 1 now, plus 4 × 45/60 of the last.
    expect(
      top
        .policy(0)
        .limited(t0 + 75_000)
        .get('a'),
    ).toEqual({ count: 4, error: 0 })
    expect(
      top
        .policy(0)
        .limited(t0 + 110_000)
        .get('a'),
    ).toEqual({ count: 2, error: 0 })
    // Two quiet windows later: nothing.
    expect(top.policy(0).limited(t0 + 250_000).size).toBe(0)
  })
})
