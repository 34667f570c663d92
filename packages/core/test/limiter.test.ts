import { createServer, type IncomingMessage } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import {
  AegisError,
  createAegis,
  AegisConfigError,
  type Aegis,
  type AegisOptions,
  type AegisRequestState,
  type Logger,
} from '../src/index.js'
import { MemoryBuckets, newVerdict } from '../src/limiter/gcra.js'
import { createRouteMatcher, normalizePath } from '../src/limiter/routes.js'

const instances: Aegis[] = []
const make = (options: AegisOptions): Aegis => {
  const a = createAegis({ validator: false, headers: false, ...options })
  instances.push(a)
  return a
}
afterEach(async () => {
  await Promise.all(instances.splice(0).map((a) => a.close()))
})

/** A request as the pipeline reads it, from a given socket address. */
const fakeRequest = (
  remoteAddress: string,
  headers: Record<string, string> = {},
  url = '/',
): IncomingMessage =>
  ({
    socket: { remoteAddress },
    headers: { host: 'example.com', ...headers },
    rawHeaders: [],
    method: 'GET',
    url,
    httpVersion: '1.1',
  }) as unknown as IncomingMessage

/** Admit on a memory store: synchronous. */
const admit = (a: Aegis, req: IncomingMessage): AegisRequestState => a.admit(req) as AegisRequestState
const refused = (a: Aegis, req: IncomingMessage): boolean => admit(a, req).rejection?.status === 429

describe('GCRA (memory buckets)', () => {
  const rate = (points: number, durationS: number, burst = points) => {
    const interval = (durationS * 1000) / points
    return { interval, tolerance: burst * interval, blockMs: 0 }
  }

  it('admits burst at once, then one point per interval', () => {
    const b = new MemoryBuckets(rate(10, 1, 3), 100) // 100 ms per point, 3 at once
    const v = newVerdict()
    const take = (now: number) => {
      b.check('k', 1, now, v)
      if (v.allowed) b.commit()
      return v.allowed
    }
    expect([take(0), take(0), take(0), take(0)]).toEqual([true, true, true, false])
    expect(v.retryMs).toBeCloseTo(100)
    expect(take(99)).toBe(false)
    expect(take(100)).toBe(true)
    expect(take(150)).toBe(false)
    expect(take(200)).toBe(true)
  })

  it('never admits more than burst + t / interval in any span of t (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }), // points per second
        fc.integer({ min: 1, max: 20 }), // burst
        fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1, max: 3 })), {
          minLength: 1,
          maxLength: 300,
        }), // (ms since previous request, cost)
        (points, burst, steps) => {
          const r = rate(points, 1, burst)
          const b = new MemoryBuckets(r, 10)
          const v = newVerdict()
          const admitted: { at: number; cost: number }[] = []
          let now = 1_000
          for (const [gap, cost] of steps) {
            now += gap
            b.check('k', cost, now, v)
            if (v.allowed) {
              b.commit()
              admitted.push({ at: now, cost })
            }
          }
          // Every window [start, end] holds at most burst + (end - start) / interval points.
          for (let i = 0; i < admitted.length; i++) {
            let spent = 0
            for (let j = i; j < admitted.length; j++) {
              spent += admitted[j]!.cost
              const span = admitted[j]!.at - admitted[i]!.at
              expect(spent).toBeLessThanOrEqual(burst + span / r.interval + 1e-6)
            }
          }
        },
      ),
    )
  })

  it('holds at most maxKeys buckets, least recently used go first', () => {
    const b = new MemoryBuckets(rate(1, 60), 1_000)
    const v = newVerdict()
    for (let i = 0; i < 50_000; i++) {
      b.check(`k${i}`, 1, 0, v)
      b.commit()
    }
    expect(b.size).toBe(1_000)
    expect(b.get('k49999', 0, v)).toBeDefined()
    expect(b.get('k0', 0, v)).toBeUndefined()
  })
})

describe('route matching', () => {
  it('matches every spelling a router may route to the same path', () => {
    for (const url of [
      '/login',
      '/LOGIN',
      '/login/',
      '//login',
      '/%6Cogin',
      '/login;jsessionid=1',
      '/login?x=1',
    ])
      expect(normalizePath(url)).toBe('/login')
    const routes = createRouteMatcher([
      ['POST /login', 'login'],
      ['/api/*', 'api'],
      ['GET /users/:id', 'user'],
    ])
    expect(routes.match('POST', '/Login/')).toEqual(['login'])
    expect(routes.match('GET', '/login')).toEqual([])
    expect(routes.match('DELETE', '/api/v1/x')).toEqual(['api'])
    expect(routes.match('GET', '/api')).toEqual(['api'])
    expect(routes.match('HEAD', '/users/7')).toEqual(['user'])
    expect(routes.match('GET', '/users/7/posts')).toEqual([])
    expect(routes.match('GET', 'http://example.com/users/7?x')).toEqual(['user'])
  })
})

describe('limiter keys', () => {
  it('1,000 addresses of one IPv6 /64 share one bucket; another /64 has its own', () => {
    const a = make({ limiter: { points: 1000, duration: 3600 } })
    for (let i = 0; i < 1000; i++)
      expect(refused(a, fakeRequest(`2001:db8:1:2::${i.toString(16)}`))).toBe(false)
    expect(refused(a, fakeRequest('2001:db8:1:2:ffff::1'))).toBe(true)
    expect(refused(a, fakeRequest('2001:db8:1:3::1'))).toBe(false)
  })

  it('the /64 is configurable (/48 to /128)', () => {
    const a = make({ ipv6Subnet: 128, limiter: { points: 1, duration: 3600 } })
    expect(refused(a, fakeRequest('2001:db8::1'))).toBe(false)
    expect(refused(a, fakeRequest('2001:db8::2'))).toBe(false)
    expect(refused(a, fakeRequest('2001:db8::1'))).toBe(true)
    const b = make({ ipv6Subnet: 48, limiter: { points: 1, duration: 3600 } })
    expect(refused(b, fakeRequest('2001:db8:1:1::1'))).toBe(false)
    expect(refused(b, fakeRequest('2001:db8:1:ffff::1'))).toBe(true)
  })

  it('IPv4-mapped addresses are keyed as their IPv4 address, never sharing with other IPv4 clients', () => {
    const a = make({ limiter: { points: 2, duration: 3600 } })
    expect(refused(a, fakeRequest('::ffff:192.0.2.1'))).toBe(false)
    expect(refused(a, fakeRequest('::ffff:c000:201'))).toBe(false)
    // Both spellings and the plain address are one client, whose 2 points are spent.
    expect(refused(a, fakeRequest('192.0.2.1'))).toBe(true)
    expect(refused(a, fakeRequest('192.0.2.2'))).toBe(false)
    expect(refused(a, fakeRequest('::ffff:192.0.2.3'))).toBe(false)
    // Never folded into one IPv6 /64 bucket with the other mapped clients.
    expect(admit(a, fakeRequest('::ffff:192.0.2.4')).client.key).toBe('192.0.2.4')
  })

  it('X-Forwarded-For from an untrusted peer changes nothing, and is warned about once', () => {
    const warnings: unknown[] = []
    const logger: Logger = {
      info: () => undefined,
      warn: (o) => void warnings.push(o),
      error: () => undefined,
    }
    const a = make({ logger, limiter: { points: 2, duration: 3600 } })
    expect(refused(a, fakeRequest('203.0.113.5', { 'x-forwarded-for': '198.51.100.1' }))).toBe(false)
    expect(refused(a, fakeRequest('203.0.113.5', { 'x-forwarded-for': '198.51.100.2' }))).toBe(false)
    expect(refused(a, fakeRequest('203.0.113.5', { 'x-forwarded-for': '198.51.100.3' }))).toBe(true)
    expect(warnings).toEqual([{ code: 'AEGIS_WARN_XFF_UNTRUSTED' }])
  })

  it('warns once when a thousand requests in a row come from one private address and no proxy is trusted', () => {
    const warnings: unknown[] = []
    const logger: Logger = {
      info: () => undefined,
      warn: (o) => void warnings.push(o),
      error: () => undefined,
    }
    const a = make({ logger, limiter: { points: 1e6, duration: 60 } })
    for (let i = 0; i < 999; i++) admit(a, fakeRequest('10.0.0.5'))
    expect(warnings).toEqual([])
    for (let i = 0; i < 2000; i++) admit(a, fakeRequest('10.0.0.5'))
    expect(warnings).toEqual([{ code: 'AEGIS_WARN_ONE_CLIENT' }])
    // A public address sending everything (one busy client) is no sign of a proxy.
    const b = make({ logger, limiter: { points: 1e6, duration: 60 } })
    for (let i = 0; i < 2000; i++) admit(b, fakeRequest('9.9.9.9'))
    expect(warnings).toHaveLength(1)
  })
})

describe('several policies on one request', () => {
  it('a refusal by one store gives back what another charged (fixed-window route on a GCRA default)', async () => {
    const a = make({
      limiter: {
        points: 10,
        duration: 60,
        routes: { '/fw': { points: 1, duration: 60, algorithm: 'fixed-window' } },
      },
    })
    const req = () => fakeRequest('198.51.100.7', {}, '/fw')
    expect((await a.admit(req())).rejection).toBeUndefined()
    const second = await a.admit(req())
    expect(second.rejection?.status).toBe(429)
    expect(JSON.parse(second.rejection?.body ?? '{}')['violated-policies']).toEqual(['/fw'])
    // The default policy was charged once, for the admitted request only.
    expect(await a.limiter?.get('198.51.100.7')).toMatchObject({ remaining: 9 })
  })

  it('refuses an unknown policy and an unadmitted request with coded AegisErrors (404 / 400)', async () => {
    const a = make({ limiter: { points: 10, duration: 60 } })
    await expect(a.limiter?.get('198.51.100.9', 'nope')).rejects.toMatchObject({
      code: 'AEGIS_ERR_NOT_FOUND',
      status: 404,
      message: 'limiter: no policy named "nope"',
    })
    const stranger = fakeRequest('198.51.100.9', {}, '/')
    await expect(a.limiter?.penalty(stranger, 1)).rejects.toSatisfy(
      (err: unknown) => AegisError.is(err) && err.code === 'AEGIS_ERR_INVALID_ARGUMENT' && err.status === 400,
    )
  })

  it('an observing policy never refuses, and does not stop an enforcing one from charging', () => {
    const a = make({
      limiter: { points: 3, duration: 60, routes: { '/x': { points: 1, duration: 60, mode: 'observe' } } },
    })
    const states = [1, 2, 3, 4].map(() => admit(a, fakeRequest('198.51.100.8', {}, '/x')))
    expect(states.map((s) => s.rejection?.status ?? 200)).toEqual([200, 200, 200, 429])
    expect(states[3]?.headers.find(([n]) => n === 'ratelimit')?.[1]).toMatch(
      /^"default";r=0;t=60, "\/x";r=0;/,
    )
  })
})

describe('limiter options', () => {
  it('misconfiguration fails at startup naming the option', () => {
    const issues = (options: AegisOptions): string[] => {
      try {
        createAegis(options)
      } catch (err) {
        if (err instanceof AegisConfigError) return err.issues.map((i) => i.path)
        throw err
      }
      return []
    }
    expect(issues({ limiter: { points: 0 } })).toEqual(['limiter.points'])
    expect(issues({ limiter: { routes: { login: { points: 1, duration: 1 } } } })).toEqual([
      'limiter.routes.login',
    ])
    expect(issues({ limiter: { routes: { '/x': { duration: 1 } as never } } })).toEqual([
      'limiter.routes./x.points',
    ])
    expect(issues({ limiter: { allow: ['10.0.0.0/33'] } })).toEqual(['limiter.allow.0'])
    expect(issues({ limiter: { name: 'a"b' } })).toEqual(['limiter.name'])
    expect(issues({ store: { redis: 'http://127.0.0.1:6379' } })).toEqual(['store.redis'])
    expect(issues({ limiter: { adaptive: { minLimit: 10, maxLimit: 5 } } })).toContain(
      'limiter.adaptive.minLimit',
    )
    expect(issues({ limiter: { shed: { maxEventLoopDelayMs: 0 } } })).toEqual([
      'limiter.shed.maxEventLoopDelayMs',
    ])
    expect(issues({ limiter: { algorithm: 'fixed-window', burst: 5 } })).toEqual(['limiter.burst'])
    const twice = { name: 'x', points: 1, duration: 1 }
    expect(issues({ limiter: { routes: { '/a': twice, '/b': twice } } })).toEqual(['limiter.routes'])
  })
})

describe('load shedding', () => {
  const serve = async (options: AegisOptions, handler: (done: () => void) => void) => {
    const a = make(options)
    const server = createServer((req, res) => {
      const state = a.admit(req) as AegisRequestState
      a.track(req, res)
      a.applyHeaders(res, state)
      if (state.rejection)
        return void res.writeHead(state.rejection.status, state.rejection.headers).end(state.rejection.body)
      handler(() => res.end('ok'))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
    return { a, url, close: () => new Promise((r) => server.close(r)) }
  }

  it('answers 503 with Retry-After while the event loop lags beyond its bound, then recovers', async () => {
    const { url, close } = await serve(
      { limiter: { shed: { maxEventLoopDelayMs: 50, sampleIntervalMs: 100 } } },
      (done) => done(),
    )
    expect((await fetch(url)).status).toBe(200)
    // The request is sent while the loop is blocked, and read right after the stall.
    const pending = fetch(url)
    const until = performance.now() + 250
    while (performance.now() < until) {
      // block the event loop
    }
    const shed = await pending
    expect(shed.status).toBe(503)
    expect(Number(shed.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(await shed.json()).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#temporary-reduced-capacity',
      code: 'AEGIS_ERR_OVERLOADED',
    })
    await new Promise((r) => setTimeout(r, 300))
    expect((await fetch(url)).status).toBe(200)
    await close()
  })

  it('adaptive concurrency: past the limit in flight, requests are shed with 503', async () => {
    const pending: (() => void)[] = []
    const { a, url, close } = await serve(
      { limiter: { adaptive: { initialLimit: 2, minLimit: 2, maxLimit: 2 } } },
      (done) => void pending.push(done),
    )
    const first = [fetch(url), fetch(url)]
    while (pending.length < 2) await new Promise((r) => setTimeout(r, 5))
    const third = await fetch(url)
    expect(third.status).toBe(503)
    expect(await third.json()).toMatchObject({ code: 'AEGIS_ERR_OVERLOADED' })
    for (const done of pending.splice(0)) done()
    expect((await Promise.all(first)).map((r) => r.status)).toEqual([200, 200])
    expect(a.limiter?.concurrencyLimit).toBe(2)
    // Slots come back when responses end.
    const again = fetch(url)
    while (pending.length < 1) await new Promise((r) => setTimeout(r, 5))
    pending.splice(0).forEach((done) => done())
    expect((await again).status).toBe(200)
    expect((await a.scrapeMetrics())?.body).toMatch(/aegis_adaptive_concurrency_limit 2/)
    await close()
  })
})
