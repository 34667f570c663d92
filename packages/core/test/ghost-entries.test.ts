/**
 * The ghost cache's listing and purges for the admin API (issue 18): `ghost.entries()`
 * (paged; key, route, status, size, age, freshness — never a body, a field or a
 * credential) and `ghost.purge({ route })` / `{ all: true }`, with the memory store and
 * with a real Redis. Real upstreams on loopback behind a real instance.
 */
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, inject, it } from 'vitest'
import {
  AegisArgumentError,
  createAegis,
  type Aegis,
  type AegisEvents,
  type AegisOptions,
  type GhostEntryView,
} from '../src/index.js'
import { startUpstream, type Upstream } from '../../../test/helpers/upstream.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { waitFor } from '../../../test/helpers/wait.js'

failOnUncaught()

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close()
})

/** An origin answering every GET with a cacheable JSON body (`private` under `/me`, learned per credential). */
async function origin(name: string): Promise<Upstream> {
  const u = await startUpstream(name, (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.setHeader('cache-control', req.url?.startsWith('/stale') ? 'max-age=0' : 'public, max-age=60')
    if (req.url?.startsWith('/vary')) res.setHeader('vary', 'Accept-Language')
    res.end(JSON.stringify({ secret: 'body-never-listed', url: req.url }))
  })
  open.push(u)
  return u
}

async function serve(options: AegisOptions): Promise<{ core: Aegis; url: string }> {
  const core = createAegis({ limiter: false, anomaly: false, metrics: false, ...options })
  open.push(core)
  const server = createServer(core.handler())
  core.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  if (core.store !== undefined) await waitFor('the store', () => core.store?.up === true, 3000)
  return { core, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

const stores: [string, () => AegisOptions][] = [
  ['memory', () => ({ ghost: true })],
  [
    'Redis',
    () => ({
      ghost: { store: 'redis' },
      store: { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` },
    }),
  ],
]

describe.each(stores)('ghost entries and purges (%s)', (_name, storeOptions) => {
  async function learned(): Promise<{ core: Aegis; url: string; host: string }> {
    const a = await origin('a')
    const b = await origin('b')
    const { core, url } = await serve({
      ...storeOptions(),
      proxy: [
        { prefix: '/a', name: 'api-a', upstreams: [a.url], ghost: { credentials: true } },
        { prefix: '/b', name: 'api-b', upstreams: [b.url] },
      ],
    })
    const get = async (path: string, headers: Record<string, string> = {}): Promise<void> => {
      const r = await fetch(`${url}${path}`, { headers })
      expect(r.status).toBe(200)
      await r.arrayBuffer()
    }
    for (let i = 0; i < 5; i++) await get(`/a/items/${i}`)
    await get('/a/stale')
    await get('/a/vary', { 'accept-language': 'fr' })
    await get('/a/vary', { 'accept-language': 'de' })
    await get('/a/me', { authorization: 'Bearer s3cret-token' })
    for (let i = 0; i < 3; i++) await get(`/b/things/${i}`)
    const host = new URL(url).host
    // Learning ends after the answer went out (and, with Redis, once the store took it).
    await waitFor('every entry learned', async () => (await core.ghost!.list()).length === 12, 5000)
    return { core, url, host }
  }

  it('lists entries a page at a time, in key order, without bodies, fields or credentials', async () => {
    const { core, host } = await learned()
    const seen: GhostEntryView[] = []
    let page = await core.ghost!.entries({ limit: 4 })
    const pages = [page]
    while (page.next !== null) {
      page = await core.ghost!.entries({ limit: 4, cursor: page.next })
      pages.push(page)
    }
    for (const p of pages) seen.push(...p.entries)
    // Whole URLs per page: the two variants of /a/vary stay together.
    expect(pages.length).toBeGreaterThanOrEqual(3)
    expect(seen.length).toBe(12)
    expect(JSON.parse(JSON.stringify(pages))).toEqual(pages)
    const keys = seen.map((e) => e.key)
    expect(keys).toEqual([...keys].sort())
    const text = JSON.stringify(pages)
    expect(text).not.toContain('body-never-listed')
    expect(text).not.toContain('s3cret')
    expect(text).not.toContain('credential')

    const item = seen.find((e) => e.key === `GET ${host}/a/items/0`)
    expect(item).toEqual({
      key: `GET ${host}/a/items/0`,
      scoped: false,
      route: 'api-a',
      status: 200,
      bytes: expect.any(Number),
      vary: [],
      receivedAt: expect.any(String),
      ageSeconds: expect.any(Number),
      fresh: true,
      freshUntil: expect.any(String),
      staleForbidden: false,
      expiresAt: expect.any(String),
    })
    // 60 s of life, less the age it arrived with: the origin's Date has whole seconds (under 1 s
    // of age), and a loaded machine may take another second between the origin and the cache.
    const life = Date.parse(item!.freshUntil) - Date.parse(item!.receivedAt)
    expect(life).toBeGreaterThan(58_000)
    expect(life).toBeLessThanOrEqual(60_000)
    expect(seen.find((e) => e.key === `GET ${host}/a/stale`)?.fresh).toBe(false)
    expect(seen.filter((e) => e.key === `GET ${host}/a/vary`).map((e) => e.vary)).toEqual([
      ['accept-language'],
      ['accept-language'],
    ])
    expect(seen.find((e) => e.key === `GET ${host}/a/me`)).toMatchObject({ scoped: true, route: 'api-a' })

    const onlyB = await core.ghost!.entries({ route: 'api-b' })
    expect(onlyB.entries.map((e) => e.key)).toEqual([0, 1, 2].map((i) => `GET ${host}/b/things/${i}`))
    expect(onlyB.next).toBeNull()
    const prefixed = await core.ghost!.entries({ prefix: `GET ${host}/a/items/` })
    expect(prefixed.entries.length).toBe(5)
  })

  it('purges by route and then everything, and says so on the bus', async () => {
    const { core, host } = await learned()
    const purged: AegisEvents['ghost.purged'][] = []
    core.events.on('ghost.purged', (e) => purged.push(e))
    expect(await core.ghost!.purge({ route: 'api-b' })).toBe(3)
    const left = await core.ghost!.entries({ limit: 1000 })
    expect(left.entries.every((e) => e.route === 'api-a')).toBe(true)
    expect(left.entries.length).toBe(9)
    // A credential-scoped entry goes by the key it is listed under.
    expect(await core.ghost!.purge({ key: `GET ${host}/a/me` })).toBe(2)
    expect(await core.ghost!.purge({ all: true })).toBe(7)
    expect((await core.ghost!.entries()).entries).toEqual([])
    expect(purged).toEqual([
      { by: 'route', value: 'api-b', count: 3 },
      { by: 'key', value: `GET ${host}/a/me`, count: 2 },
      { by: 'all', value: '', count: 7 },
    ])
  })
})

describe('ghost entries and purge arguments', () => {
  it('refuses what it cannot answer, with AegisArgumentError', async () => {
    const { core } = await serve({ ghost: true })
    const ghost = core.ghost!
    await expect(ghost.entries({ limit: 0 })).rejects.toThrow(AegisArgumentError)
    await expect(ghost.entries({ limit: 1001 })).rejects.toThrow(/limit is an integer from 1 to 1000/)
    await expect(ghost.entries({ cursor: 'not a cursor!' })).rejects.toThrow(/cursor/)
    await expect(ghost.entries({ route: 3 as unknown as string })).rejects.toThrow(/route is a string/)
    await expect(ghost.purge({ all: false as unknown as true })).rejects.toThrow(/takes true/)
    await expect(ghost.purge({ route: '' })).rejects.toThrow(/non-empty string/)
    await expect(ghost.purge({} as { all: true })).rejects.toThrow(/exactly one of/)
    expect(await ghost.entries()).toEqual({ entries: [], next: null })
  })
})
