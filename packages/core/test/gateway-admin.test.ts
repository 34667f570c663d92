/**
 * The gateway's operator view and controls (issue 18): `aegis.gateway.status()`,
 * `upstream()`, `drain()`, `enable()`, `forceBreaker()`. Real upstreams on loopback behind
 * a real instance served by `node:http`; real Redis for the shared-breaker case.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { Redis } from 'ioredis'
import {
  AegisArgumentError,
  createAegis,
  type Aegis,
  type AegisEvents,
  type AegisOptions,
} from '../src/index.js'
import { startUpstream, type Upstream } from '../../../test/helpers/upstream.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { waitForSubscribers } from '../../../test/helpers/redis.js'
import { sleep, waitFor } from '../../../test/helpers/wait.js'

failOnUncaught()

const open: { close(): Promise<void> | void }[] = []
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close()
})

/** An instance behind a real server on loopback: its base URL. */
async function serve(
  options: AegisOptions,
  app?: (core: Aegis) => (req: IncomingMessage, res: ServerResponse) => unknown,
): Promise<{ core: Aegis; url: string }> {
  const core = createAegis({ limiter: false, anomaly: false, ...options })
  const server = createServer(core.handler(app?.(core)))
  core.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  open.push({ close: () => core.close() })
  return { core, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function upstream(name: string, handler?: (req: IncomingMessage, res: ServerResponse) => void) {
  const u = await startUpstream(name, handler)
  open.push(u)
  return u
}

/** An upstream that holds every request until `release()`. */
async function holding(name: string): Promise<Upstream & { held: ServerResponse[]; release(): void }> {
  const held: ServerResponse[] = []
  const u = await upstream(name, (_req, res) => void held.push(res))
  return Object.assign(u, {
    held,
    release() {
      for (const res of held.splice(0)) res.end(name)
    },
  })
}

const get = async (url: string): Promise<{ status: number; body: string }> => {
  const r = await fetch(url)
  return { status: r.status, body: await r.text() }
}

describe('gateway status', () => {
  it("lists every route, the proxy option's and proxy()'s, with each upstream's state, as plain JSON", async () => {
    const a = await upstream('a')
    const b = await upstream('b')
    const { core, url } = await serve({
      proxy: [{ prefix: '/api', name: 'api', upstreams: [a.url, { url: b.url, weight: 3 }], slowStart: 0 }],
    })
    core.proxy({ prefix: '/later', upstreams: [a.url], balancer: { hash: 'client' }, breaker: false })
    for (let i = 0; i < 4; i++) expect((await get(`${url}/api/x`)).status).toBe(200)

    const status = core.gateway.status()
    // Plain JSON: a round trip changes nothing.
    expect(JSON.parse(JSON.stringify(status))).toEqual(status)
    expect(status.map((r) => [r.name, r.prefix, r.balancer, r.shared])).toEqual([
      ['/later', '/later', 'hash', false],
      ['api', '/api', 'round-robin', false],
    ])
    const api = status[1]!
    expect(api.upstreams.map((u) => [u.upstream, u.weight, u.effectiveWeight])).toEqual([
      [a.url, 1, 1],
      [b.url, 3, 3],
    ])
    expect(api.upstreams[0]).toEqual({
      upstream: a.url,
      admin: 'ready',
      available: true,
      weight: 1,
      effectiveWeight: 1,
      health: { checked: false, healthy: true, ejected: false, ejectedUntil: null, ejections: 0 },
      breaker: {
        state: 'closed',
        forced: null,
        origin: null,
        window: { fires: 1, successes: 1, failures: 0, rejects: 0 },
      },
      inflight: 0,
      queue: { active: 0, connections: 128, pending: 0, maxPending: 1024 },
      totals: { requests: 1, failures: 0 },
    })
    expect(api.upstreams[1]?.totals).toEqual({ requests: 3, failures: 0 })
    expect(status[0]?.upstreams[0]?.breaker).toBeNull()
    expect(core.gateway.upstream('api', b.url)).toEqual(api.upstreams[1])
  })

  it('shows an ejection with its end, and slow start after a recovery', async () => {
    const bad = await upstream('bad', (_req, res) => {
      res.statusCode = 500
      res.end()
    })
    const good = await upstream('good')
    const { core, url } = await serve({
      proxy: [
        {
          prefix: '/api',
          upstreams: [bad.url, good.url],
          retry: false,
          breaker: false,
          slowStart: 60_000,
          outlier: { consecutive5xx: 1, baseEjectionTime: 30_000 },
        },
      ],
    })
    for (let i = 0; i < 4; i++) await get(`${url}/api/x`)
    const [ejected] = core.gateway.status()[0]!.upstreams
    expect(ejected?.health).toMatchObject({ ejected: true, ejections: 1 })
    const until = Date.parse(ejected?.health.ejectedUntil ?? '')
    expect(until - Date.now()).toBeGreaterThan(25_000)
    expect(until - Date.now()).toBeLessThanOrEqual(30_000)
    expect(ejected?.available).toBe(false)
    expect(ejected?.totals.failures).toBeGreaterThanOrEqual(1)
    // Drained and enabled again: back with slow start (a tenth of its weight at first).
    core.gateway.drain('/api', good.url)
    const { after } = core.gateway.enable('/api', good.url)
    expect(after.effectiveWeight).toBeLessThan(0.2)
    expect(after.admin).toBe('ready')
  })
})

describe('drain and enable', () => {
  it('a drained upstream gets no new request while the one in flight finishes; enable brings it back', async () => {
    const a = await holding('a')
    const b = await holding('b')
    const { core, url } = await serve({
      proxy: [{ prefix: '/api', name: 'api', upstreams: [a.url, b.url], slowStart: 0, retry: false }],
    })
    const admin: AegisEvents['upstream.admin'][] = []
    core.events.on('upstream.admin', (e) => admin.push(e))
    const first = get(`${url}/api/first`)
    await waitFor('the first request upstream', () => a.held.length + b.held.length === 1)
    const [busy, idle] = a.held.length === 1 ? [a, b] : [b, a]

    const change = core.gateway.drain('api', busy.url)
    expect(change).toMatchObject({ route: 'api', upstream: busy.url, action: 'drain', changed: true })
    expect(change.before).toMatchObject({ admin: 'ready', inflight: 1 })
    expect(change.after).toMatchObject({ admin: 'drain', inflight: 1, available: false })
    expect(admin).toEqual([
      {
        route: 'api',
        upstream: busy.url,
        action: 'drain',
        changed: true,
        before: { admin: 'ready', breaker: 'closed', forced: null },
        after: { admin: 'drain', breaker: 'closed', forced: null },
      },
    ])
    // Draining again changes nothing, and says so.
    expect(core.gateway.drain('api', busy.url).changed).toBe(false)

    const later = Array.from({ length: 10 }, (_, i) => get(`${url}/api/later-${i}`))
    await waitFor('ten requests on the other upstream', () => idle.held.length === 10)
    expect(busy.held.length).toBe(1)
    expect(busy.seen.map((s) => s.url)).toEqual(['/first'])
    // The request in flight finishes normally.
    busy.release()
    expect(await first).toEqual({ status: 200, body: busy.name })
    idle.release()
    expect((await Promise.all(later)).every((r) => r.status === 200 && r.body === idle.name)).toBe(true)
    expect(core.gateway.upstream('api', busy.url)).toMatchObject({ admin: 'drain', inflight: 0 })

    expect(core.gateway.enable('api', busy.url)).toMatchObject({ changed: true, after: { admin: 'ready' } })
    const again = Array.from({ length: 4 }, () => get(`${url}/api/again`))
    await waitFor('requests on both upstreams', () => busy.held.length === 2 && idle.held.length === 2)
    busy.release()
    idle.release()
    await Promise.all(again)
  })

  it('every upstream drained: 503 without reaching any', async () => {
    const a = await upstream('a')
    const { core, url } = await serve({ proxy: [{ prefix: '/api', upstreams: [a.url] }] })
    core.gateway.drain('/api', a.url)
    const r = await fetch(`${url}/api/x`)
    expect(r.status).toBe(503)
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    expect(a.seen).toEqual([])
  })

  it('acts on a route added by proxy() too', async () => {
    const a = await upstream('a')
    const b = await upstream('b')
    const { core, url } = await serve({}, (core) => {
      const route = core.proxy({ prefix: '/added', upstreams: [a.url, b.url], slowStart: 0 })
      return (req, res) => route.handle(req, res, req.url ?? '/')
    })
    core.gateway.drain('/added', a.url)
    for (let i = 0; i < 4; i++) expect((await get(`${url}/added/x`)).body).toContain('"name":"b"')
    expect(a.seen).toEqual([])
  })

  it('names what it does not know: an unknown route or upstream, a bad breaker state', async () => {
    const a = await upstream('a')
    const { core } = await serve({
      proxy: [
        { prefix: '/api', name: 'api', upstreams: [a.url] },
        { prefix: '/plain', upstreams: [a.url], breaker: false },
      ],
    })
    const seen: unknown[] = []
    core.events.on('upstream.admin', (e) => seen.push(e))
    expect(() => core.gateway.drain('nope', a.url)).toThrow(AegisArgumentError)
    expect(() => core.gateway.drain('nope', a.url)).toThrow(/no proxy route named "nope" \(routes: .*"api"/)
    try {
      core.gateway.enable('api', 'http://127.0.0.1:1')
    } catch (err) {
      expect(err).toMatchObject({ code: 'AEGIS_ERR_NOT_FOUND', status: 404 })
      expect((err as Error).message).toContain(`has no upstream "http://127.0.0.1:1" (upstreams: "${a.url}")`)
    }
    expect(() => core.gateway.upstream('api', 'x')).toThrow(/has no upstream "x"/)
    expect(() => core.gateway.forceBreaker('api', a.url, 'half-open' as 'open')).toThrow(
      expect.objectContaining({ code: 'AEGIS_ERR_INVALID_ARGUMENT' }),
    )
    expect(() => core.gateway.forceBreaker('/plain', a.url, 'open')).toThrow(/no circuit breakers/)
    expect(seen).toEqual([])
  })
})

describe('forced breakers', () => {
  it('held open: 503 at once, the upstream reached by nothing, no probe after resetTimeout; auto closes it again', async () => {
    const a = await upstream('a')
    const { core, url } = await serve({
      proxy: [{ prefix: '/api', upstreams: [a.url], breaker: { resetTimeout: 100 } }],
    })
    const changes: AegisEvents['upstream.breaker'][] = []
    core.events.on('upstream.breaker', (e) => changes.push(e))
    const change = core.gateway.forceBreaker('/api', a.url, 'open')
    expect(change.before.breaker).toMatchObject({ state: 'closed', forced: null })
    expect(change.after.breaker).toMatchObject({ state: 'open', forced: 'open', origin: 'local' })
    expect(changes).toEqual([
      { route: '/api', upstream: a.url, state: 'open', origin: 'local', forced: true },
    ])
    await sleep(300) // past resetTimeout: a breaker of its own would let a probe through now
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${url}/api/x`)
      expect(r.status).toBe(503)
      expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    }
    expect(a.seen).toEqual([])
    expect(core.gateway.upstream('/api', a.url).breaker?.state).toBe('open')

    const auto = core.gateway.forceBreaker('/api', a.url, 'auto')
    expect(auto.after.breaker).toMatchObject({ state: 'closed', forced: null })
    expect(changes.at(-1)).toEqual({
      route: '/api',
      upstream: a.url,
      state: 'closed',
      origin: 'local',
      forced: true,
    })
    expect((await get(`${url}/api/x`)).status).toBe(200)
  })

  it('held closed: a failing upstream keeps getting requests; auto shows the state its breaker found meanwhile', async () => {
    const bad = await upstream('bad', (_req, res) => {
      res.statusCode = 500
      res.end('down')
    })
    const { core, url } = await serve({
      proxy: [
        {
          prefix: '/api',
          upstreams: [bad.url],
          retry: false,
          outlier: false,
          breaker: { volumeThreshold: 2, resetTimeout: 60_000 },
        },
      ],
    })
    core.gateway.forceBreaker('/api', bad.url, 'closed')
    for (let i = 0; i < 6; i++) expect((await get(`${url}/api/x`)).status).toBe(500)
    expect(bad.seen.length).toBe(6)
    const held = core.gateway.upstream('/api', bad.url).breaker
    expect(held).toMatchObject({ state: 'closed', forced: 'closed' })
    expect(held?.window.failures).toBeGreaterThanOrEqual(2)
    const auto = core.gateway.forceBreaker('/api', bad.url, 'auto')
    expect(auto.after.breaker).toMatchObject({ state: 'open', forced: null })
    expect((await get(`${url}/api/x`)).status).toBe(503)
    expect(bad.seen.length).toBe(6)
  })

  it('with breaker.shared a hold stays on its instance: nothing is published, the peer keeps its own state', async () => {
    const a = await upstream('a')
    const prefix = `aegis-test:${randomUUID()}:`
    const store = { redis: inject('redisUrl'), prefix }
    const route = { prefix: '/api', name: 'shared', upstreams: [a.url], breaker: { shared: true } }
    const one = await serve({ store, proxy: [route] })
    const two = await serve({ store, proxy: [route] })
    await waitFor('both stores up', () => one.core.store?.up === true && two.core.store?.up === true)
    await waitForSubscribers(one.core.store!.client, `${prefix}breaker`, 2)
    const spy = new Redis(inject('redisUrl'))
    open.push({ close: () => void spy.disconnect() })
    const messages: string[] = []
    await spy.subscribe(`${prefix}breaker`)
    spy.on('message', (_channel: string, text: string) => messages.push(text))

    one.core.gateway.forceBreaker('shared', a.url, 'open')
    expect((await get(`${one.url}/api/x`)).status).toBe(503)
    await sleep(200)
    expect(messages).toEqual([])
    expect(two.core.gateway.upstream('shared', a.url).breaker?.state).toBe('closed')
    expect((await get(`${two.url}/api/x`)).status).toBe(200)
  })
})
