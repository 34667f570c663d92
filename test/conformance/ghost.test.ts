/**
 * The ghost cache on every adapter, through real sockets to real upstreams on
 * loopback: what a proxy route learned answers for it when its upstream is killed,
 * answers 5xx, hangs (breaker open) — and what the app learned answers for it when a
 * handler throws or answers 5xx. Never for a POST, never past `maxStale`, and, with
 * nothing learned, the normal error answer.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions, ProxyRouteOptions } from '@aegis/core'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { sleep } from '../helpers/wait.js'
import { hit, type Reply } from '../helpers/hit.js'
import { gateways, type GatewayApp } from './gateway-apps.js'
import { ghostApps, type GhostApp } from './ghost-apps.js'

/** What an upstream does: answer, answer 500, or accept and never answer. */
type Mode = 'ok' | '500' | 'hang'

async function controlledUpstream(): Promise<{
  upstream: Upstream
  set: (mode: Mode) => void
  served: () => number
}> {
  let mode: Mode = 'ok'
  let served = 0
  const upstream = await startUpstream('ghosted', (req, res) => {
    if (mode === 'hang') return
    if (mode === '500') {
      res.writeHead(500, { 'content-type': 'text/plain' })
      return void res.end('upstream broke')
    }
    served++
    res.writeHead(200, {
      'content-type': 'application/json',
      'cache-control': 'max-age=1',
      etag: `"v-${req.url}"`,
      'x-request-id': 'from-upstream',
    })
    res.end(JSON.stringify({ url: req.url, n: served }))
  })
  return { upstream, set: (m) => (mode = m), served: () => served }
}

const isGhost = (r: Reply): boolean =>
  r.headers['x-aegis-ghost'] === '1' &&
  r.headers['cache-status'] === 'aegis; hit; detail=stale-if-error' &&
  Number(r.headers.age) >= 0

describe.each(gateways)('ghost cache on %s proxy routes', (_name, createGateway) => {
  let app: GatewayApp | undefined
  let upstream: Upstream | undefined
  afterEach(async () => {
    await app?.close()
    await upstream?.close()
    app = upstream = undefined
  })

  const start = async (route: Partial<ProxyRouteOptions> = {}, options: AegisOptions = {}) => {
    const up = await controlledUpstream()
    upstream = up.upstream
    app = await createGateway([{ prefix: '/svc', upstreams: [up.upstream.url], retry: false, ...route }], {
      ghost: true,
      ...options,
    })
    return { ...up, app }
  }

  it('answers a learned GET at once when the upstream is killed, with its status, fields and body', async () => {
    const { app } = await start()
    const learned = await hit(app.port, '/svc/item?b=2&a=1')
    expect(learned.status).toBe(200)
    expect(learned.headers['x-aegis-ghost']).toBeUndefined()
    await upstream!.close()
    const ghost = await hit(app.port, '/svc/item?a=1&b=2')
    expect(ghost.status).toBe(200)
    expect(isGhost(ghost)).toBe(true)
    expect(JSON.parse(ghost.body)).toEqual(JSON.parse(learned.body))
    expect(ghost.headers['content-type']).toBe('application/json')
    expect(ghost.headers.etag).toBe(learned.headers.etag)
    // The request id belongs to the exchange that was answered, not to the replay.
    expect(ghost.headers['x-request-id']).not.toBe('from-upstream')
    // Another URL, never learned: the gateway's own answer.
    const other = await hit(app.port, '/svc/other')
    expect(other.status).toBe(502)
    expect(other.headers['content-type']).toMatch(/^application\/problem\+json/)
  })

  it('stands in for an upstream 500 of the route list; relays the 500 itself when nothing was learned', async () => {
    const { app, set } = await start()
    await hit(app.port, '/svc/a')
    set('500')
    const ghost = await hit(app.port, '/svc/a')
    expect([ghost.status, isGhost(ghost)]).toEqual([200, true])
    const relayed = await hit(app.port, '/svc/never')
    expect([relayed.status, relayed.body, relayed.headers['x-aegis-ghost']]).toEqual([
      500,
      'upstream broke',
      undefined,
    ])
  })

  it('relays a 5xx the route does not list', async () => {
    const { app, set } = await start({ ghost: { statuses: [502] } })
    await hit(app.port, '/svc/a')
    set('500')
    const r = await hit(app.port, '/svc/a')
    expect([r.status, r.body]).toEqual([500, 'upstream broke'])
  })

  it('answers from the ghost without waiting once the breaker opened on a hung upstream', async () => {
    const { app, set } = await start({
      timeouts: { headers: 200 },
      breaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 30_000 },
    })
    await hit(app.port, '/svc/a')
    set('hang')
    // The first ones wait out the timeout (and are answered from the ghost then)…
    for (let i = 0; i < 3; i++) {
      const r = await hit(app.port, '/svc/a')
      expect([r.status, isGhost(r)]).toEqual([200, true])
    }
    // …then the breaker is open: no wait at all.
    const fast: number[] = []
    for (let i = 0; i < 20; i++) {
      const r = await hit(app.port, '/svc/a')
      expect([r.status, isGhost(r)]).toEqual([200, true])
      fast.push(r.ms)
    }
    fast.sort((a, b) => a - b)
    expect(fast[10]).toBeLessThan(50)
  })

  it('never answers a POST from the ghost', async () => {
    const { app } = await start()
    await hit(app.port, '/svc/a')
    await upstream!.close()
    const post = await hit(app.port, '/svc/a', { method: 'POST', body: 'x' })
    expect(post.status).toBe(502)
  })

  it('never past maxStale', async () => {
    const { app } = await start({ ghost: { maxStale: 1 } })
    await hit(app.port, '/svc/a')
    await upstream!.close()
    expect(isGhost(await hit(app.port, '/svc/a'))).toBe(true)
    // max-age=1 then maxStale 1 s: gone after two seconds.
    await sleep(2100)
    expect((await hit(app.port, '/svc/a')).status).toBe(502)
  }, 10_000)

  it('answers 304 when the validators match, and a HEAD from the GET it learned', async () => {
    const { app } = await start()
    const learned = await hit(app.port, '/svc/a')
    await upstream!.close()
    const revalidated = await hit(app.port, '/svc/a', { headers: { 'if-none-match': learned.headers.etag! } })
    expect([revalidated.status, revalidated.body, revalidated.headers['x-aegis-ghost']]).toEqual([
      304,
      '',
      '1',
    ])
    expect(revalidated.headers.etag).toBe(learned.headers.etag)
    const other = await hit(app.port, '/svc/a', { headers: { 'if-none-match': '"other"' } })
    expect(other.status).toBe(200)
    const head = await hit(app.port, '/svc/a', { method: 'HEAD' })
    expect([head.status, head.body, head.headers['content-length']]).toEqual([
      200,
      '',
      String(Buffer.byteLength(learned.body)),
    ])
  })

  it('a route that opts out learns and serves nothing', async () => {
    const { app } = await start({ ghost: false })
    await hit(app.port, '/svc/a')
    await upstream!.close()
    expect((await hit(app.port, '/svc/a')).status).toBe(502)
  })

  it('says on the bus when a route starts and stops answering from the ghost', async () => {
    const { app, set } = await start()
    const seen: unknown[] = []
    app.core.events.on('ghost.serving', (e) => seen.push(e))
    await hit(app.port, '/svc/a')
    set('500')
    await hit(app.port, '/svc/a')
    await hit(app.port, '/svc/a')
    set('ok')
    await hit(app.port, '/svc/a')
    // The route's name: its prefix where it was given, `/` where Express mounted it at the prefix.
    const route = app.routes[0]!.config.name ?? app.routes[0]!.config.prefix
    expect(seen).toEqual([
      { route, serving: true, reason: 'status' },
      { route, serving: false },
    ])
    expect(app.core.audit?.entries({ types: ['ghost.serving'] })).toHaveLength(2)
  })
})

describe.each(ghostApps)("ghost cache on %s's own routes", (_name, createApp) => {
  let app: GhostApp | undefined
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('answers what the app learned when its handler throws, and when it answers 5xx', async () => {
    app = await createApp({ ghost: true })
    const learned = await hit(app.port, '/page?x=1')
    expect(learned.status).toBe(200)
    app.fail('throw')
    const thrown = await hit(app.port, '/page?x=1')
    expect([thrown.status, isGhost(thrown), thrown.body]).toEqual([200, true, learned.body])
    expect(thrown.headers['content-type']).toBe(learned.headers['content-type'])
    // Aegis' own fields are on the stand-in, the app's error page's are not.
    expect(thrown.headers['x-content-type-options']).toBe('nosniff')
    app.fail('503')
    const answered = await hit(app.port, '/page?x=1')
    expect([answered.status, isGhost(answered), answered.body]).toEqual([200, true, learned.body])
  })

  it('gives the normal error answer when nothing was learned, and never for a POST', async () => {
    app = await createApp({ ghost: true })
    await hit(app.port, '/page')
    app.fail('503')
    const never = await hit(app.port, '/page?other=1')
    expect([never.status, never.body, never.headers['x-aegis-ghost']]).toEqual([503, 'app down', undefined])
    const post = await hit(app.port, '/page', { method: 'POST' })
    expect(post.status).toBe(503)
  })

  it('learns nothing with ghost off, and nothing of the app with app: false', async () => {
    for (const options of [{}, { ghost: { app: false } }] satisfies AegisOptions[]) {
      app = await createApp(options)
      await hit(app.port, '/page')
      app.fail('503')
      expect((await hit(app.port, '/page')).status).toBe(503)
      await app.close()
      app = undefined
    }
  })
})
