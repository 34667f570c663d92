/**
 * The ghost cache's opt-in modes and its control, on every adapter's gateway, with a
 * real upstream on loopback: fresh hits answered before forwarding (`serveFresh`), stale
 * answers while one request refreshes a key (`staleWhileRevalidate`), what an unsafe
 * method changed forgotten, the nearest sibling for an unseen URL (`synthesize`), and
 * purges by key, prefix and route template.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions, ProxyRouteOptions } from '@aegis/core'
import { hit, type Reply } from '../helpers/hit.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { sleep } from '../helpers/wait.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

/** An upstream counting what reaches it: `?ms=` delays the answer, `?cc=` sets its Cache-Control. */
async function counting(): Promise<{ upstream: Upstream; hits: () => number }> {
  let hits = 0
  const upstream = await startUpstream('counting', (req, res) => {
    hits++
    const url = new URL(req.url ?? '/', 'http://x')
    const answer = (): void => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'cache-control': url.searchParams.get('cc') ?? 'max-age=60',
      })
      res.end(JSON.stringify({ url: req.url, hit: hits }))
    }
    const ms = Number(url.searchParams.get('ms') ?? 0)
    if (req.method !== 'GET') return void res.writeHead(204).end()
    if (ms > 0) setTimeout(answer, ms)
    else answer()
  })
  return { upstream, hits: () => hits }
}

const body = (r: Reply): { url: string; hit: number } => JSON.parse(r.body) as { url: string; hit: number }

describe.each(gateways)('ghost cache modes on %s', (_name, createGateway) => {
  let app: GatewayApp | undefined
  let upstream: Upstream | undefined
  afterEach(async () => {
    await app?.close()
    await upstream?.close()
    app = upstream = undefined
  })
  const start = async (ghost: ProxyRouteOptions['ghost'], options: AegisOptions = { ghost: true }) => {
    const up = await counting()
    upstream = up.upstream
    app = await createGateway(
      [{ prefix: '/svc', upstreams: [up.upstream.url], retry: false, ghost }],
      options,
    )
    return { app, hits: up.hits }
  }

  it('serveFresh answers a fresh entry without forwarding; the request may ask for a fresh answer', async () => {
    const { app, hits } = await start({ serveFresh: true })
    const first = await hit(app.port, '/svc/a')
    const second = await hit(app.port, '/svc/a')
    expect(hits()).toBe(1)
    expect(second.body).toBe(first.body)
    expect(second.headers['cache-status']).toMatch(/^aegis; hit; ttl=\d+$/)
    expect(second.headers['x-aegis-ghost']).toBeUndefined()
    expect(Number(second.headers.age)).toBeGreaterThanOrEqual(0)
    // no-cache, Pragma, max-age=0: to the upstream.
    for (const headers of [
      { 'cache-control': 'no-cache' },
      { pragma: 'no-cache' },
      { 'cache-control': 'max-age=0' },
    ])
      await hit(app.port, '/svc/a', { headers })
    expect(hits()).toBe(4)
    // max-age=0 answers are never fresh; no-cache ones are always revalidated (forwarded).
    for (const cc of ['max-age=0', 'no-cache, max-age=60']) {
      await hit(app.port, `/svc/b?cc=${encodeURIComponent(cc)}`)
      await hit(app.port, `/svc/b?cc=${encodeURIComponent(cc)}`)
    }
    expect(hits()).toBe(8)
  })

  it('serveFresh revalidates a stale entry with its validator; a 304 refreshes it and the client gets it whole', async () => {
    const seen: (string | undefined)[] = []
    upstream = await startUpstream('validating', (req, res) => {
      seen.push(req.headers['if-none-match'])
      if (req.headers['if-none-match'] === '"v1"')
        return void res.writeHead(304, { 'cache-control': 'max-age=60' }).end()
      res.writeHead(200, { 'content-type': 'text/plain', etag: '"v1"', 'cache-control': 'max-age=1' })
      res.end('version one')
    })
    app = await createGateway(
      [{ prefix: '/svc', upstreams: [upstream.url], retry: false, ghost: { serveFresh: true } }],
      {
        ghost: true,
      },
    )
    expect((await hit(app.port, '/svc/doc')).body).toBe('version one')
    await sleep(1100)
    const revalidated = await hit(app.port, '/svc/doc')
    expect([revalidated.status, revalidated.body, revalidated.headers['cache-status']]).toEqual([
      200,
      'version one',
      'aegis; fwd=stale; fwd-status=304; stored',
    ])
    expect(revalidated.headers['cache-control']).toBe('max-age=60')
    // Fresh again for a minute: not forwarded. A client's own validator still gets its 304.
    expect((await hit(app.port, '/svc/doc')).headers['cache-status']).toMatch(/^aegis; hit; ttl=/)
    expect((await hit(app.port, '/svc/doc', { headers: { 'if-none-match': '"v1"' } })).status).toBe(304)
    expect(seen).toEqual([undefined, '"v1"'])
  })

  it('staleWhileRevalidate: one request refreshes a stale key, the others get the stale entry at once', async () => {
    const { app, hits } = await start({ staleWhileRevalidate: 60 })
    const path = '/svc/slow?cc=max-age%3D1&ms=400'
    await hit(app.port, path)
    await sleep(1100)
    const refreshing = hit(app.port, path)
    await sleep(50)
    const others = await Promise.all(Array.from({ length: 5 }, () => hit(app.port, path)))
    for (const r of others) {
      expect(r.headers['cache-status']).toBe('aegis; hit; detail=stale-while-revalidate')
      expect(r.ms).toBeLessThan(300)
    }
    expect((await refreshing).headers['cache-status']).toBeUndefined()
    expect(hits()).toBe(2)
  })

  it('refreshAhead: near the end of its freshness, one request refreshes an entry while the others are answered', async () => {
    const { app, hits } = await start({ serveFresh: true, refreshAhead: 2 })
    const path = '/svc/hot?cc=max-age%3D3&ms=300'
    await hit(app.port, path)
    expect((await hit(app.port, path)).headers['cache-status']).toMatch(/^aegis; hit/)
    expect(hits()).toBe(1)
    await sleep(1200)
    // In the last 2 s: the first goes upstream, those meanwhile are answered from the entry.
    const refreshing = hit(app.port, path)
    await sleep(50)
    const others = await Promise.all(Array.from({ length: 3 }, () => hit(app.port, path)))
    for (const r of others) expect(r.headers['cache-status']).toMatch(/^aegis; hit; ttl=/)
    expect((await refreshing).headers['cache-status']).toBeUndefined()
    expect(hits()).toBe(2)
    // Refreshed: fresh for 3 s again, answered.
    expect(body(await hit(app.port, path)).hit).toBe(2)
  })

  it('forgets what a PUT, POST or DELETE changed', async () => {
    const { app } = await start(true)
    await hit(app.port, '/svc/items/1')
    await hit(app.port, '/svc/items/2')
    expect((await hit(app.port, '/svc/items/1', { method: 'PUT', body: '{}' })).status).toBe(204)
    await upstream!.close()
    expect((await hit(app.port, '/svc/items/1')).status).toBe(502)
    expect((await hit(app.port, '/svc/items/2')).headers['x-aegis-ghost']).toBe('1')
  })

  it('synthesize answers an unseen URL with its nearest learned sibling, marked', async () => {
    const { app } = await start({ synthesize: true })
    await hit(app.port, '/svc/users/7')
    await hit(app.port, '/svc/users/100')
    await upstream!.close()
    const r = await hit(app.port, '/svc/users/8')
    expect([r.status, r.headers['x-aegis-ghost'], r.headers['cache-status']]).toEqual([
      200,
      'synthesized',
      'aegis; hit; detail=synthesized',
    ])
    expect(body(r).url).toBe('/users/7')
    // Another template: nothing to offer.
    expect((await hit(app.port, '/svc/orders/8')).status).toBe(502)
  })

  it('purges by key, prefix and template, tells the bus, and shows its templates', async () => {
    const { app } = await start(true)
    for (const path of ['/svc/users/1', '/svc/users/2', '/svc/users/3', '/svc/about', '/svc/help'])
      await hit(app.port, path)
    const ghost = app.core.ghost!
    const purged: unknown[] = []
    app.core.events.on('ghost.purged', (e) => purged.push(e))
    const bases = (await ghost.list()).map((e) => e.base).sort()
    expect(bases).toHaveLength(5)
    const about = bases.find((b) => b.endsWith('/about'))!
    expect(await ghost.purge({ key: about })).toBe(1)
    expect(await ghost.purge({ template: '/svc/users/:id' })).toBe(3)
    expect((await ghost.list()).map((e) => e.base)).toEqual([bases.find((b) => b.endsWith('/help'))])
    expect(await ghost.purge({ prefix: 'GET ' })).toBe(1)
    expect(purged).toEqual([
      { by: 'key', value: about, count: 1 },
      { by: 'template', value: '/svc/users/:id', count: 3 },
      { by: 'prefix', value: 'GET ', count: 1 },
    ])
    expect(ghost.templates().find((t) => t.template === '/svc/users/:id')).toMatchObject({ learned: 3 })
    await upstream!.close()
    expect((await hit(app.port, '/svc/users/1')).status).toBe(502)
  })
})
