/**
 * The admin API over the four adapters, on its own listener and mounted on the app: the
 * checks every request meets (Host against DNS rebinding, Origin, token, role, method, the
 * anti-CSRF header), each refusal a problem+json with its code; then every endpoint; then the
 * live feed carrying a change made through the API.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it, onTestFinished } from 'vitest'
import { createAegis, watchConfig, type AegisOptions } from '@aegis/core'
import { send, sendMany } from '../helpers/send.js'
import { hit } from '../helpers/hit.js'
import { adapters, type TestApp } from './apps.js'

const ADMIN = 'admin-token-0123456789abcdef'
const READER = 'read-token-0123456789abcdef'
const CSRF = { 'x-aegis-admin': '1' }

const options = (extra: AegisOptions = {}): AegisOptions => ({
  admin: {
    tokens: [
      { name: 'ops', token: ADMIN, role: 'admin' },
      { name: 'viewer', token: READER, role: 'read' },
    ],
    listen: '127.0.0.1:0',
    mount: '/_aegis',
  },
  ghost: true,
  ...extra,
})

/** A request with a forged `Host` (fetch sends its own). */
const withHost = (url: string, headers: Record<string, string>) => {
  const u = new URL(url)
  return hit(Number(u.port), u.pathname, { headers })
}

const bearer = (token: string, more: Record<string, string> = {}) => ({
  authorization: `Bearer ${token}`,
  ...more,
})

describe('admin options', () => {
  it('refuse to start without a token, on loopback or off it, naming the option', () => {
    for (const listen of ['0.0.0.0:9901', '127.0.0.1:9901', '[::]:9901'])
      expect(() => createAegis({ admin: { listen } })).toThrow(/admin\.token: the admin API needs a token/)
    expect(() => createAegis({ admin: { token: 'short' } })).toThrow(
      /admin\.token: a token needs at least 16/,
    )
    expect(() => createAegis({ admin: { token: ADMIN, listen: 'nowhere' } })).toThrow(/admin\.listen/)
    expect(() => createAegis({ admin: { token: ADMIN, listen: false } })).toThrow(/admin\.mount/)
    expect(() =>
      createAegis({ admin: { tokens: [{ name: 'a', token: ADMIN, role: 'admin' }], token: ADMIN } }),
    ).toThrow(/admin\.tokens\.0\.token: the same token twice/)
    // The token never shows in the error.
    try {
      createAegis({ admin: { token: 'short-secret' } })
    } catch (err) {
      expect(String(err)).not.toContain('short-secret')
    }
  })
})

describe.each(adapters)('%s: admin API', (_name, make) => {
  let app: TestApp | undefined
  const start = async (extra?: AegisOptions) => {
    app = await make(options(extra))
    const address = await app.core.admin?.ready
    if (address === undefined) throw new Error('the admin listener did not start')
    return { app, own: `http://127.0.0.1:${address.port}`, mounted: `${app.url}/_aegis` }
  }
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('refuses, on its listener and where mounted: no token, a wrong one, a read token changing, a bad Host, a foreign Origin, GET for a change, no anti-CSRF header', async () => {
    const { own, mounted } = await start()
    for (const base of [own, mounted]) {
      const problemOf = async (
        r: Promise<{ status: number; headers: Record<string, unknown>; body: string }>,
      ) => {
        const a = await r
        expect(String(a.headers['content-type'])).toMatch(/^application\/problem\+json/)
        return { status: a.status, code: (JSON.parse(a.body) as { code: string }).code, headers: a.headers }
      }
      /** A change asked of `path` with these fields and body, answered with a problem. */
      const post = (path: string, headers: Record<string, string>, body: string) =>
        problemOf(send(`${base}/v1/${path}`, { method: 'POST', headers, body }))
      const none = await problemOf(send(`${base}/v1/status`))
      expect(none).toMatchObject({ status: 401, code: 'AEGIS_ERR_ADMIN_TOKEN' })
      expect(none.headers['www-authenticate']).toBe('Bearer realm="aegis-admin"')
      expect(await problemOf(send(`${base}/v1/status`, { headers: bearer(`${ADMIN}x`) }))).toMatchObject({
        status: 401,
        code: 'AEGIS_ERR_ADMIN_TOKEN',
      })
      expect(await problemOf(send(`${base}/v1/status`, { headers: { authorization: ADMIN } }))).toMatchObject(
        {
          status: 401,
        },
      )
      // The read token reads, and may not change.
      expect((await send(`${base}/v1/status`, { headers: bearer(READER) })).status).toBe(200)
      // Changes refused: by a read token; from a page of another site (a form, with or without an
      // Origin); without the anti-CSRF header; with a body that is no JSON, or too large.
      const key = '{"key":"203.0.113.9"}'
      const json = { 'content-type': 'application/json' }
      const refusedChanges = [
        ['anomaly/unblock', bearer(READER, { ...CSRF, ...json }), key, 403, 'AEGIS_ERR_ADMIN_ROLE'],
        [
          'anomaly/unblock',
          bearer(ADMIN, { origin: 'https://evil.example', 'content-type': 'text/plain' }),
          key,
          403,
          'AEGIS_ERR_ADMIN_ORIGIN',
        ],
        [
          'anomaly/unblock',
          bearer(ADMIN, { 'sec-fetch-site': 'cross-site' }),
          key,
          403,
          'AEGIS_ERR_ADMIN_ORIGIN',
        ],
        ['anomaly/unblock', bearer(ADMIN, json), key, 403, 'AEGIS_ERR_ADMIN_CSRF'],
        ['anomaly/unblock', bearer(ADMIN, { ...CSRF, ...json }), '{"key":', 400, 'AEGIS_ERR_BAD_REQUEST'],
        [
          'anomaly/block',
          bearer(ADMIN, { ...CSRF, ...json }),
          JSON.stringify({ key: 'x'.repeat(2 << 20) }),
          413,
          'AEGIS_ERR_BODY_TOO_LARGE',
        ],
      ] as const
      for (const [path, headers, body, status, code] of refusedChanges)
        expect(await post(path, headers, body), code).toMatchObject({ status, code })
      // DNS rebinding: a page of attacker.example, resolved to 127.0.0.1, with a stolen or guessed token.
      expect(
        await problemOf(withHost(`${base}/v1/status`, bearer(ADMIN, { host: 'attacker.example' }))),
      ).toMatchObject({ status: 403, code: 'AEGIS_ERR_ADMIN_HOST' })
      expect(
        await problemOf(withHost(`${base}/v1/status`, bearer(ADMIN, { host: 'attacker.example:9901' }))),
      ).toMatchObject({ status: 403, code: 'AEGIS_ERR_ADMIN_HOST' })
      // A change asked by GET: refused, with the methods it takes.
      const get = await problemOf(
        send(`${base}/v1/anomaly/unblock?key=203.0.113.9`, { headers: bearer(ADMIN) }),
      )
      expect(get).toMatchObject({ status: 405, code: 'AEGIS_ERR_METHOD_NOT_ALLOWED' })
      expect(get.headers.allow).toBe('POST')
      expect(await problemOf(send(`${base}/v1/nothing`, { headers: bearer(ADMIN) }))).toMatchObject({
        status: 404,
        code: 'AEGIS_ERR_NOT_FOUND',
      })
    }
  })

  it('serves every endpoint, and a change made through it is an admin.action event', async () => {
    const upstream = createServer((_req, res) => res.end('up'))
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => void upstream.close())
    const port = (upstream.address() as AddressInfo).port
    const {
      app: a,
      own,
      mounted,
    } = await start({
      proxy: [{ prefix: '/backend', upstreams: [`http://127.0.0.1:${port}`], breaker: {} }],
    })
    const actions: unknown[] = []
    a.core.events.on('admin.action', (e) => actions.push(e))
    for (const [i, base] of [own, mounted].entries()) {
      const get = async (path: string, headers: Record<string, string> = {}) => {
        const r = await send(`${base}/v1${path}`, { headers: bearer(ADMIN, headers) })
        return { ...r, json: r.body === '' ? undefined : (JSON.parse(r.body) as Record<string, unknown>) }
      }
      const change = async (method: string, path: string, body?: unknown) => {
        const r = await send(`${base}/v1${path}`, {
          method,
          headers: bearer(ADMIN, { ...CSRF, 'content-type': 'application/json', 'x-request-id': `req-${i}` }),
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        })
        return { ...r, json: JSON.parse(r.body) as Record<string, unknown> }
      }

      const index = await get('')
      expect(index.status).toBe(200)
      expect((index.json?.endpoints as { path: string }[]).map((e) => e.path)).toContain('/v1/feed')

      const status = await get('/status')
      expect(status.json).toMatchObject({ version: 1, generation: 1, store: { configured: false } })
      expect(status.json?.engines).toEqual(expect.arrayContaining(['limiter', 'anomaly', 'ghost', 'admin']))
      expect(status.headers['cache-control']).toBe('no-store')

      const config = await get('/config')
      expect(config.status).toBe(200)
      expect(config.body).not.toContain(ADMIN)
      expect(config.body).not.toContain(READER)
      expect(config.json?.config).toMatchObject({
        admin: {
          tokens: [
            { name: 'ops', token: '[redacted]' },
            { name: 'viewer', token: '[redacted]' },
          ],
        },
      })
      const etag = config.headers.etag as string
      expect(etag).toMatch(/^"1-/)
      expect((await get('/config', { 'if-none-match': etag })).status).toBe(304)

      // Anomaly: a scanner, then its state, a block and an unblock.
      await sendMany(10, (n) => `${a.url}/.git/probe-${i}-${n}`)
      const clients = await get('/anomaly/clients?n=5')
      expect((clients.json?.clients as { key: string; reasons: string[] }[])[0]).toMatchObject({
        key: '127.0.0.1',
        reasons: ['rule:scanner'],
      })
      expect((await get('/anomaly/clients/127.0.0.1')).json?.client).toMatchObject({ key: '127.0.0.1' })
      expect((await get('/anomaly/clients/203.0.113.200')).status).toBe(404)
      expect((await get('/anomaly/stats')).json?.stats).toMatchObject({ mode: 'observe' })
      expect((await change('POST', '/anomaly/block', { key: '203.0.113.9', ms: 60_000 })).json).toMatchObject(
        {
          blocked: '203.0.113.9',
        },
      )
      expect((await change('POST', '/anomaly/unblock', { key: '203.0.113.9' })).json).toMatchObject({
        unblocked: true,
      })
      expect((await change('POST', '/anomaly/block', { key: '203.0.113.9', ms: -1 })).status).toBe(400)
      expect((await get('/anomaly/clients?n=0')).status).toBe(400)

      // Limiter: the test client's key has a bucket; clearing it forgets it.
      const key = await get('/limiter/keys/127.0.0.1')
      expect(key.status).toBe(200)
      expect(key.json).toMatchObject({ key: '127.0.0.1' })
      expect((await change('DELETE', '/limiter/keys/127.0.0.1')).json).toMatchObject({ cleared: true })
      expect((await get('/limiter/keys/127.0.0.1?policy=nope')).status).toBe(404)

      // Ghost: the app's answers learned, listed, purged.
      await send(`${a.url}/items/1`)
      await send(`${a.url}/items/1`)
      const entries = await get('/ghost/entries?limit=10')
      expect(entries.status).toBe(200)
      expect(entries.json).toMatchObject({ version: 1, entries: expect.any(Array), next: null })
      expect((await get('/ghost/entries?limit=0')).status).toBe(400)
      expect((await get('/ghost/templates')).status).toBe(200)
      expect((await change('POST', '/ghost/purge', { prefix: '/' })).json).toMatchObject({
        purged: expect.any(Number),
      })
      expect((await change('POST', '/ghost/purge', { key: 'a', prefix: 'b' })).status).toBe(400)

      // Audit: a search, the stats, the chain verified.
      const audit = await get('/audit?types=admin.action&order=desc&limit=5')
      expect(audit.json).toMatchObject({ version: 1, entries: expect.any(Array) })
      expect((await get('/audit/stats')).json).toMatchObject({ version: 1 })
      expect((await get('/audit/verify')).json).toMatchObject({ verification: { ok: true } })
      expect((await get('/audit?order=sideways')).status).toBe(400)

      // Metrics history (on with the admin API) and the process.
      const history = await get('/history?range=10m&series=requests,status.*')
      expect(history.json).toMatchObject({ version: 1, range: '10m' })
      expect(Object.keys(history.json?.series as object)).toContain('requests')
      expect((await get('/history?range=1y')).status).toBe(400)
      expect((await get('/runtime')).json).toMatchObject({
        version: 1,
        runtime: expect.any(Object),
        redis: null,
      })

      // The gateway: its routes, one upstream, drain and enable, a breaker held open and let go.
      const routes = await get('/routes')
      const route = (routes.json?.routes as { name: string; upstreams: { upstream: string }[] }[])[0]
      expect(route?.name).toBe('/backend')
      const id = `/routes/${encodeURIComponent(route?.name ?? '')}/upstreams/${encodeURIComponent(route?.upstreams[0]?.upstream ?? '')}`
      expect((await get(id)).json?.upstream).toMatchObject({ admin: 'ready' })
      expect((await change('POST', `${id}/drain`)).json?.change).toMatchObject({
        action: 'drain',
        changed: true,
      })
      expect((await send(`${a.url}/backend/x`)).status).toBe(503)
      expect((await change('POST', `${id}/enable`)).json?.change).toMatchObject({ changed: true })
      expect((await change('POST', `${id}/breaker`, { state: 'open' })).json?.change).toMatchObject({
        changed: true,
      })
      expect((await send(`${a.url}/backend/x`)).status).toBe(503)
      expect((await change('POST', `${id}/breaker`, { state: 'auto' })).status).toBe(200)
      expect((await change('POST', `${id}/breaker`, { state: 'sideways' })).status).toBe(400)
      expect((await get('/routes/nope/upstreams/nope')).status).toBe(404)

      // The limiter's top keys.
      expect((await get('/limiter/top?by=share&n=3')).json).toMatchObject({ version: 1, by: 'share' })
      expect((await get('/limiter/top?by=nothing')).status).toBe(400)
    }
    // Every change succeeded is an event: who, from where, which request.
    expect(actions).toContainEqual(
      expect.objectContaining({
        action: 'anomaly.unblock',
        actor: 'ops',
        role: 'admin',
        requestId: 'req-1',
        target: '203.0.113.9',
      }),
    )
    expect(actions).toContainEqual(expect.objectContaining({ action: 'limiter.clear', target: '127.0.0.1' }))
    // A change allowed but refused is recorded too, with why.
    expect(actions).toContainEqual(
      expect.objectContaining({
        action: 'anomaly.block',
        outcome: 'refused',
        error: expect.stringMatching(/ms/),
      }),
    )
    // The audit trail has them, one by one.
    const trail = a.core.audit?.entries({ types: ['admin.action'] }) ?? []
    expect(trail.map((e) => e.action)).toEqual(expect.arrayContaining(['anomaly.unblock', 'ghost.purge']))
  })

  it('validates, applies (If-Match) and reloads from its file a configuration, each change audited', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-admin-'))
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'aegis.json')
    const { app: a, own } = await start()
    const base = `${own}/v1`
    const json = (r: { body: string }) => JSON.parse(r.body) as Record<string, unknown>
    const put = (body: unknown, headers: Record<string, string> = {}) =>
      send(`${base}/config`, {
        method: 'PUT',
        headers: bearer(ADMIN, { ...CSRF, 'content-type': 'application/json', ...headers }),
        body: JSON.stringify(body),
      })
    // The options the test app was built with (apps.ts adds the metrics path), as a reload
    // takes them: the whole object.
    const next = (reportTo: string): AegisOptions => ({
      metrics: { path: '/metrics' },
      ...options(),
      headers: { contentSecurityPolicy: `default-src 'self'; report-uri ${reportTo}` },
    })

    // Validate: errors by path, or the diff (a read token may ask).
    const bad = json(
      await send(`${base}/config/validate`, {
        method: 'POST',
        headers: bearer(READER, { ...CSRF, 'content-type': 'application/json' }),
        body: JSON.stringify({ ...next('/csp-0'), limiter: { limit: -1 } }),
      }),
    )
    expect(bad).toMatchObject({ ok: false, errors: [expect.objectContaining({ path: 'limiter.limit' })] })
    const good = json(
      await send(`${base}/config/validate`, {
        method: 'POST',
        headers: bearer(READER, { ...CSRF, 'content-type': 'application/json' }),
        body: JSON.stringify(next('/csp-1')),
      }),
    )
    expect(good, JSON.stringify(good)).toMatchObject({ ok: true, changed: true })
    expect(JSON.stringify(good.diff)).not.toContain(ADMIN)

    // Apply with the ETag read: the new header is in force; with the old ETag again: 412.
    const etag = (await send(`${base}/config`, { headers: bearer(ADMIN) })).headers.etag as string
    const applied = await put(next('/csp-1'), { 'if-match': etag })
    expect(applied.status).toBe(200)
    expect(json(applied)).toMatchObject({ changed: true, generation: 2 })
    expect(applied.headers.etag).not.toBe(etag)
    expect((await send(`${a.url}/`)).headers['content-security-policy']).toContain('report-uri /csp-1')
    const stale = await put(next('/csp-2'), { 'if-match': etag })
    expect(stale.status).toBe(412)
    expect(json(stale)).toMatchObject({ code: 'AEGIS_ERR_ADMIN_PRECONDITION' })
    // A refused one: 400 with its errors; the configuration in force keeps running.
    const refused = await put({ ...next('/csp-1'), limiter: { limit: -1 } })
    expect(refused.status).toBe(400)
    expect(json(refused)).toMatchObject({
      code: 'AEGIS_ERR_CONFIG',
      errors: [expect.objectContaining({ path: 'limiter.limit' })],
    })
    expect(a.core.generation).toBe(2)

    // Reload from the file the instance watches.
    const reload = () => send(`${base}/config/reload`, { method: 'POST', headers: bearer(ADMIN, CSRF) })
    expect(json(await reload())).toMatchObject({ code: 'AEGIS_ERR_ADMIN_NO_FILE' })
    writeFileSync(file, JSON.stringify(next('/csp-1')))
    const watcher = watchConfig(a.core, file, {
      load: (p) => JSON.parse(readFileSync(p, 'utf8')) as AegisOptions,
    })
    onTestFinished(() => watcher.close())
    writeFileSync(file, JSON.stringify(next('/csp-3')))
    const fromFile = await reload()
    expect(fromFile.status).toBe(200)
    expect(json(fromFile)).toMatchObject({ file, generation: 3 })
    expect((await send(`${a.url}/`)).headers['content-security-policy']).toContain('report-uri /csp-3')

    // Each change an audit entry: who, the hashes, the diff.
    const entries = a.core.audit?.entries({ types: ['admin.action'] }) ?? []
    expect(
      entries.filter((e) => e.action.startsWith('config.')).map((e) => [e.action, e.outcome ?? 'ok']),
    ).toEqual([
      ['config.apply', 'ok'],
      ['config.apply', 'refused'],
      ['config.apply', 'refused'],
      ['config.reload', 'refused'],
      ['config.reload', 'ok'],
    ])
    expect(entries.find((e) => e.action === 'config.apply')).toMatchObject({
      actor: 'ops',
      before: expect.any(String),
      after: expect.any(String),
      diff: expect.arrayContaining([expect.objectContaining({ op: expect.any(String) })]),
    })
  })

  it('streams the live feed: a batch a second with the events of that second', async () => {
    const { own } = await start()
    const controller = new AbortController()
    const r = await fetch(`${own}/v1/feed?types=admin.*`, {
      headers: bearer(READER),
      signal: controller.signal,
    })
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const reader = (r.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let text = ''
    const deadline = Date.now() + 5_000
    let changed = false
    while (Date.now() < deadline && !/"action":"anomaly.unblock"/.test(text)) {
      const { value, done } = await reader.read()
      if (done) break
      text += decoder.decode(value)
      if (!changed && text.includes('event: hello')) {
        changed = true
        await send(`${own}/v1/anomaly/unblock`, {
          method: 'POST',
          headers: bearer(ADMIN, { ...CSRF, 'content-type': 'application/json' }),
          body: JSON.stringify({ key: '198.51.100.1' }),
        })
      }
    }
    controller.abort()
    const batches = text
      .split('\n\n')
      .filter((b) => b.startsWith('event: batch'))
      .map(
        (b) =>
          JSON.parse(b.slice(b.indexOf('data: ') + 6)) as { version: number; events: { type: string }[] },
      )
    expect(batches.length).toBeGreaterThan(0)
    expect(batches.every((b) => b.version === 1)).toBe(true)
    expect(batches.flatMap((b) => b.events)).toContainEqual(
      expect.objectContaining({
        type: 'admin.action',
        action: 'anomaly.unblock',
        actor: 'ops',
        target: '198.51.100.1',
      }),
    )
  })

  it('close() stops its listener and ends the feed', async () => {
    const { app: a, own } = await start()
    const controller = new AbortController()
    const r = await fetch(`${own}/v1/feed`, { headers: bearer(READER), signal: controller.signal })
    const reader = (r.body as ReadableStream<Uint8Array>).getReader()
    await reader.read()
    await a.close()
    app = undefined
    const end = await reader.read().then(
      ({ done }) => done,
      () => true,
    )
    expect(end).toBe(true)
    await expect(fetch(`${own}/v1/status`, { headers: bearer(ADMIN) })).rejects.toThrow()
  })
})
