import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, inject, it } from 'vitest'
import type { AegisOptions } from '@aegis/core'
import { send, sendMany } from '../helpers/send.js'
import { adapters, type TestApp } from './apps.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// The same scenarios on the memory store (synchronous admission) and on Redis (asynchronous).
const stores = [
  ['memory', (): AegisOptions => ({})],
  [
    'redis',
    (): AegisOptions => ({ store: { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` } }),
  ],
] as const

const cases = adapters.flatMap(([name, make]) =>
  stores.map(([store, options]) => [name, store, make, options] as const),
)

describe.each(cases)('%s on %s: rate limiting', (_name, _store, make, storeOptions) => {
  let app: TestApp | undefined
  const start = async (options: AegisOptions) => {
    app = await make({ ...storeOptions(), ...options })
    // Until Redis answers, the memory insurance decides: wait, so one store sees every request.
    for (let i = 0; i < 250 && app.core.store !== undefined && !app.core.store.up; i++)
      await new Promise((r) => setTimeout(r, 20))
    return app
  }
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('admits N requests, answers the N+1-th with 429, Retry-After, IETF fields and a quota-exceeded problem', async () => {
    const a = await start({ limiter: { points: 5, duration: 60 } })
    const ok = await sendMany(5, `${a.url}/`)
    expect(ok.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
    // Reported on every limited response, not only on refusals.
    expect(ok[0]?.headers['ratelimit-policy']).toBe('"default";q=5;w=60')
    expect(ok.map((r) => r.headers.ratelimit)).toEqual([
      '"default";r=4;t=12',
      '"default";r=3;t=24',
      '"default";r=2;t=36',
      '"default";r=1;t=48',
      '"default";r=0;t=60',
    ])
    const refused = await send(`${a.url}/`)
    expect(refused.status).toBe(429)
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(11)
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(12)
    expect(refused.headers['ratelimit-policy']).toBe('"default";q=5;w=60')
    expect(refused.headers.ratelimit).toMatch(/^"default";r=0;t=(59|60)$/)
    // Security headers stay on the refusal.
    expect(refused.headers['x-content-type-options']).toBe('nosniff')
    expect(JSON.parse(refused.body)).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#quota-exceeded',
      status: 429,
      'violated-policies': ['default'],
      code: 'AEGIS_ERR_RATE_LIMITED',
    })
    const scraped = await send(`${a.url}/metrics`)
    expect(scraped.body).toMatch(/aegis_limiter_decisions_total\{policy="default",outcome="allowed"\} 5/)
    expect(scraped.body).toMatch(/aegis_limiter_decisions_total\{policy="default",outcome="limited"\} 1/)
    expect(scraped.body).toMatch(/aegis_rejections_total\{reason="rate-limit"\} 1/)
  })

  it('legacy and X-RateLimit fields on request', async () => {
    const a = await start({ limiter: { points: 3, duration: 30, headers: ['ietf', 'legacy', 'x'] } })
    const r = await send(`${a.url}/`)
    expect(r.headers).toMatchObject({
      'ratelimit-limit': '3',
      'ratelimit-remaining': '2',
      'ratelimit-reset': '10',
      'x-ratelimit-limit': '3',
      'x-ratelimit-remaining': '2',
    })
    const reset = Number(r.headers['x-ratelimit-reset'])
    expect(reset).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 9)
    expect(reset).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 11)
  })

  it('a per-route policy applies to its route only, on top of the default one', async () => {
    const a = await start({
      limiter: { points: 100, duration: 60, routes: { 'POST /login': { points: 2, duration: 60 } } },
    })
    const logins = await sendMany(3, `${a.url}/login`, { method: 'POST' })
    expect(logins.map((r) => r.status)).toEqual([200, 200, 429])
    expect(logins[0]?.headers['ratelimit-policy']).toBe('"default";q=100;w=60, "POST /login";q=2;w=60')
    expect(logins[0]?.headers.ratelimit).toBe('"default";r=99;t=1, "POST /login";r=1;t=30')
    expect(JSON.parse(logins[2]?.body ?? '{}')['violated-policies']).toEqual(['POST /login'])
    // Other spellings of the same route count against it too.
    expect((await send(`${a.url}/LOGIN/`, { method: 'POST' })).status).toBe(429)
    // Other routes and methods are untouched by it.
    const home = await send(`${a.url}/`)
    expect(home.status).toBe(200)
    expect(home.headers['ratelimit-policy']).toBe('"default";q=100;w=60')
  })

  it("dry run (mode: 'observe') counts and reports but never blocks", async () => {
    const a = await start({ limiter: { points: 2, duration: 60, mode: 'observe' } })
    const all = await sendMany(5, `${a.url}/`)
    expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
    expect(all[4]?.headers.ratelimit).toMatch(/^"default";r=0;/)
    const scraped = await send(`${a.url}/metrics`)
    expect(scraped.body).toMatch(/aegis_limiter_decisions_total\{policy="default",outcome="observed"\} 3/)
  })

  it('the allowlist bypasses the limit; the denylist answers 403', async () => {
    const allowed = await start({ limiter: { points: 1, duration: 60, allow: ['127.0.0.0/8'] } })
    const all = await sendMany(4, `${allowed.url}/`)
    expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200])
    expect(all[0]?.headers.ratelimit).toBeUndefined()
    await allowed.close()
    const denied = await start({ limiter: { deny: ['127.0.0.1'] } })
    const r = await send(`${denied.url}/`)
    expect(r.status).toBe(403)
    expect(JSON.parse(r.body)).toMatchObject({ status: 403, code: 'AEGIS_ERR_CLIENT_DENIED' })
  })

  it('a ban lasts blockDuration, then the client starts with a full quota', async () => {
    const a = await start({ limiter: { points: 100, duration: 60, blockDuration: 1.5, burst: 2 } })
    expect((await sendMany(2, `${a.url}/`)).map((r) => r.status)).toEqual([200, 200])
    const refused = await send(`${a.url}/`)
    expect(refused.status).toBe(429)
    expect(refused.headers['retry-after']).toBe('2')
    expect(JSON.parse(refused.body).detail).toMatch(/blocked/)
    await sleep(1_000)
    // Still banned although the bucket alone would have refilled (0.6 s per point).
    expect((await send(`${a.url}/`)).status).toBe(429)
    await sleep(700)
    expect((await sendMany(2, `${a.url}/`)).map((r) => r.status)).toEqual([200, 200])
    const scraped = await send(`${a.url}/metrics`)
    expect(scraped.body).toMatch(/outcome="blocked"\} [12]/)
  })

  it('the metrics path is not limited', async () => {
    const a = await start({ limiter: { points: 1, duration: 60 } })
    expect((await send(`${a.url}/`)).status).toBe(200)
    const scrapes = await sendMany(3, `${a.url}/metrics`)
    expect(scrapes.map((r) => r.status)).toEqual([200, 200, 200])
    expect(scrapes[0]?.headers.ratelimit).toBeUndefined()
  })

  it('per-request cost and a key function (API key) choose what is charged to whom', async () => {
    const a = await start({
      limiter: {
        points: 10,
        duration: 60,
        key: (req) => req.headers['x-api-key'] as string | undefined,
        cost: (req) => (req.method === 'POST' ? 5 : 1),
      },
    })
    const k1 = { headers: { 'x-api-key': 'k1' } }
    expect((await send(`${a.url}/login`, { method: 'POST', ...k1 })).headers.ratelimit).toMatch(/r=5;/)
    expect((await send(`${a.url}/login`, { method: 'POST', ...k1 })).status).toBe(200)
    expect((await send(`${a.url}/`, k1)).status).toBe(429)
    // Another key, another bucket.
    expect((await send(`${a.url}/`, { headers: { 'x-api-key': 'k2' } })).headers.ratelimit).toMatch(/r=9;/)
  })

  it('a handler charges a penalty to the request (a failed login costs more)', async () => {
    const a = await start({ limiter: { points: 10, duration: 60 } })
    expect((await send(`${a.url}/login/fail`, { method: 'POST' })).status).toBe(401)
    expect((await send(`${a.url}/`)).headers.ratelimit).toMatch(/^"default";r=5;/)
  })

  it('penalty, reward, get and reset', async () => {
    const a = await start({ limiter: { points: 10, duration: 60 } })
    expect((await send(`${a.url}/`)).status).toBe(200)
    const limiter = a.core.limiter!
    expect(await limiter.get('127.0.0.1')).toMatchObject({ policy: 'default', limit: 10, remaining: 9 })
    await limiter.reset('127.0.0.1')
    expect(await limiter.get('127.0.0.1')).toBeUndefined()
    expect((await send(`${a.url}/`)).headers.ratelimit).toMatch(/r=9;/)
  })
})
