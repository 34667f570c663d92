import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import express from 'express'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { REPROTOTYPING_IS_UNCACHED } from '@aegis/core'
import { aegis } from '../src/index.js'
import { rawRequest } from '../../../test/helpers/raw-http.js'

async function start(app: express.Express) {
  const server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

describe('@aegis/express', () => {
  it('serves metrics through shield.metrics and removes X-Powered-By', async () => {
    const app = express()
    const shield = aegis()
    app.use(shield)
    app.get('/metrics', shield.metrics)
    app.get('/things/:id', (_req, res) => res.send('thing'))
    app.get('/boom', () => {
      throw new Error('boom')
    })
    const { url, server } = await start(app)
    shield.attach(server)
    expect((await fetch(`${url}/things/7`)).headers.get('x-powered-by')).toBeNull()
    const res = await fetch(`${url}/metrics`)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
    expect(await res.text()).toMatch(
      /aegis_http_requests_total\{method="GET",route="\/things\/:id",status_class="2xx"\} 1/,
    )
    // A handler that throws: Express has left `baseUrl` unset by the time the response ends.
    expect((await fetch(`${url}/boom`)).status).toBe(500)
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(
      /aegis_http_requests_total\{method="GET",route="\/boom",status_class="5xx"\} 1/,
    )
    await shield.close()
  })

  it('admits a request once however often it is mounted, and names routes under a mount path', async () => {
    const app = express()
    const shield = aegis()
    const router = express.Router()
    router.use(shield)
    router.get('/items/:id', (req, res) => res.json({ client: req.aegis?.client.ip }))
    app.use(shield)
    app.use('/api', router)
    app.get('/metrics', shield.metrics)
    const { url, server } = await start(app)
    shield.attach(server)
    expect(await (await fetch(`${url}/api/items/1`)).json()).toEqual({ client: '127.0.0.1' })
    const text = await (await fetch(`${url}/metrics`)).text()
    expect(text).toMatch(
      /aegis_http_requests_total\{method="GET",route="\/api\/items\/:id",status_class="2xx"\} 1\n/,
    )
    await shield.close()
  })

  it('gives req.aegis to sub-apps and lets a handler replace it, without own properties on the request', async () => {
    const app = express()
    const shield = aegis({ metrics: { path: '/metrics' } })
    const sub = express()
    sub.get('/who', (req, res) =>
      res.json({ client: req.aegis?.client.ip, own: Object.hasOwn(req, 'aegis') }),
    )
    sub.get('/replace', (req, res) => {
      const state = req.aegis
      if (state !== undefined) req.aegis = { ...state, client: { ip: 'replaced', key: 'replaced' } }
      res.json({ client: req.aegis?.client.ip })
    })
    app.use(shield)
    app.use('/sub', sub)
    app.get('/back', (req, res) => res.json({ client: req.aegis?.client.ip }))
    const { url, server } = await start(app)
    shield.attach(server)
    expect(await (await fetch(`${url}/sub/who`)).json()).toEqual({ client: '127.0.0.1', own: false })
    expect(await (await fetch(`${url}/sub/replace`)).json()).toEqual({ client: 'replaced' })
    expect(await (await fetch(`${url}/back`)).json()).toEqual({ client: '127.0.0.1' })
    // The middleware serves its metrics path itself, with a query string too.
    expect(await (await fetch(`${url}/metrics?x=1`)).text()).toMatch(/aegis_http_requests_total/)
    await shield.close()
  })

  it('shares request state between copies of Aegis (its ESM and CJS builds both loaded)', async () => {
    // The CJS build bundles its own copy of core: another module instance, as with two installed versions.
    const cjs = createRequire(import.meta.url)('../dist/index.cjs') as { aegis: typeof aegis }
    const first = aegis()
    const second = cjs.aegis({ metrics: { path: '/metrics' } })
    const one = express()
    one.use(first)
    one.get('/', (req, res) => res.json({ client: req.aegis?.client.ip }))
    const two = express()
    two.use(second)
    two.get('/', (req, res) => res.json({ client: req.aegis?.client.ip }))
    const both = express()
    both.use(first, second)
    both.get('/', (req, res) => res.json({ client: req.aegis?.client.ip }))
    const started = await Promise.all([one, two, both].map((app) => start(app)))
    for (const { url } of started)
      expect(await (await fetch(`${url}/`)).json()).toEqual({ client: '127.0.0.1' })
    // Through both, the request was admitted (and counted) once: by the first.
    const scraped = await second.core.scrapeMetrics()
    expect(scraped?.body).toMatch(
      /aegis_http_requests_total\{method="GET",route="\/",status_class="2xx"\} 1\n/,
    )
    for (const { server } of started) server.close()
    await Promise.all([first.close(), second.close()])
  })

  it('serves its metrics path for an absolute-form request target', async () => {
    const app = express()
    const shield = aegis({ metrics: { path: '/metrics' } })
    app.use(shield)
    const { server } = await start(app)
    shield.attach(server)
    const { port } = server.address() as AddressInfo
    const res = await rawRequest(
      port,
      `GET http://127.0.0.1:${port}/metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
    )
    expect(res.status).toBe(200)
    expect(res.body).toMatch(/aegis_http_requests_total/)
    await shield.close()
  })

  it('keeps route labels bounded when a mount path carries values', async () => {
    const app = express()
    const shield = aegis({ metrics: { maxRoutes: 5 } })
    const tenant = express.Router({ mergeParams: true })
    tenant.get('/items/:id', (_req, res) => res.send('item'))
    app.use(shield)
    app.use('/t/:tenant', tenant)
    app.get('/metrics', shield.metrics)
    const { url, server } = await start(app)
    shield.attach(server)
    await fetch(`${url}/t/42/items/1`)
    for (let i = 0; i < 20; i++) await fetch(`${url}/t/tenant${'x'.repeat(i)}/items/1`)
    const text = await (await fetch(`${url}/metrics`)).text()
    const routes = new Set(
      [...text.matchAll(/aegis_http_requests_total\{[^}]*route="([^"]*)"/g)].map((m) => m[1]),
    )
    expect(routes.has('/t/:id/items/:id')).toBe(true)
    expect(routes.has('(other)')).toBe(true)
    expect(routes.size).toBeLessThanOrEqual(6)
    await shield.close()
  })

  it('throws AegisConfigError for bad options at construction', () => {
    expect(() => aegis({ validator: { maxHeaders: 0 } })).toThrow(/validator\.maxHeaders/)
  })
})

describe('request shaping (shield.attach, or the middleware alone)', () => {
  /**
   * How the app is set up: `attach` calls `shield.attach(server, { shapeRequests })`;
   * `middleware` only mounts `app.use(shield)` (shaped from the first request on);
   * `off` mounts `aegis(options, { shapeRequests: false })` and never attaches.
   */
  type Mode = { attach: boolean } | 'middleware' | 'off'

  /** An app using what Express sets per request: params, nested routers, locals, query, errors. */
  async function app(mode: Mode) {
    const app = express()
    const shield = aegis({ limiter: false }, mode === 'off' ? { shapeRequests: false } : {})
    const nested = express.Router({ mergeParams: true })
    nested.get('/items/:id', (req, res) =>
      res.json({ params: req.params, baseUrl: req.baseUrl, query: req.query, locals: res.locals }),
    )
    app.use(shield)
    app.use((req, res, next) => {
      res.locals.seen = req.originalUrl
      next()
    })
    app.use('/t/:tenant', nested)
    app.get('/status', (_req, res) => res.json({ status: res.statusCode, route: _req.route?.path }))
    app.get('/fail', () => {
      throw new Error('nope')
    })
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: err.message })
    })
    const started = await start(app)
    if (typeof mode === 'object') shield.attach(started.server, { shapeRequests: mode.attach })
    return { ...started, shield }
  }

  const paths = ['/t/acme/items/7?x=1&x=2', '/status', '/fail', '/nowhere', '/t/b/items/8']
  /** 20 rounds of `paths` (past the 16 responses shaping learns from); the listeners of `request` before and after close(). */
  const answers = async (mode: Mode) => {
    const { url, shield, server } = await app(mode)
    const out: string[] = []
    for (let round = 0; round < 20; round++)
      for (const p of paths) {
        const res = await fetch(url + p)
        out.push(`${res.status} ${res.headers.get('content-type')} ${await res.text()}`)
      }
    const listening = server.listenerCount('request')
    await shield.close()
    const afterClose = server.listenerCount('request')
    server.close()
    await once(server, 'close')
    return { out, listening, afterClose }
  }

  it('answers exactly as without it, before and after it has learned, attached or not', async () => {
    const plain = await answers({ attach: false })
    const shaped = await answers({ attach: true })
    const middleware = await answers('middleware')
    const off = await answers('off')
    expect(shaped.out).toEqual(plain.out)
    expect(middleware.out).toEqual(plain.out)
    expect(off.out).toEqual(plain.out)
    expect(shaped.out[0]).toContain('"params":{"tenant":"acme","id":"7"}')
    expect(shaped.out[1]).toContain('{"status":200,"route":"/status"}')
    // Shaping is one `request` listener before Express' own; close() removes it. `attach(server,
    // { shapeRequests: true })` asks for it on any Node; the middleware alone shapes where V8 needs it.
    expect([shaped.listening, shaped.afterClose]).toEqual([2, 1])
    const shapes = REPROTOTYPING_IS_UNCACHED ? 2 : 1
    expect([middleware.listening, middleware.afterClose]).toEqual([shapes, 1])
    expect([plain.listening, off.listening]).toEqual([1, 1])
  })

  it('shapes a server the middleware serves from its first request, once, until the server closes', async () => {
    const app = express()
    const shield = aegis({ limiter: false }, { shapeRequests: true })
    app.use(shield)
    app.get('/', (_req, res) => res.send('ok'))
    const { url, server } = await start(app)
    expect(server.listenerCount('request')).toBe(1)
    expect(await (await fetch(url)).text()).toBe('ok')
    expect(server.listenerCount('request')).toBe(2)
    expect(await (await fetch(url)).text()).toBe('ok')
    expect(server.listenerCount('request')).toBe(2)
    // attach() later with shaping on keeps the one listener; explicitly off removes it.
    shield.attach(server, { shapeRequests: true })
    expect(server.listenerCount('request')).toBe(2)
    const other = await start(app)
    expect(await (await fetch(other.url)).text()).toBe('ok')
    expect(other.server.listenerCount('request')).toBe(2)
    shield.attach(other.server, { shapeRequests: false })
    expect(other.server.listenerCount('request')).toBe(1)
    // A server closed for good stops its shaping (a supertest-style server per request keeps nothing).
    const third = await start(app)
    expect(await (await fetch(third.url)).text()).toBe('ok')
    expect(third.server.listenerCount('request')).toBe(2)
    third.server.close()
    await once(third.server, 'close')
    expect(third.server.listenerCount('request')).toBe(1)
    expect(third.server.listenerCount('close')).toBe(0)
    await shield.close()
    expect(server.listenerCount('request')).toBe(1)
    other.server.close()
    await once(other.server, 'close')
  })

  it('keeps one V8 layout per request and response, where Express alone makes new ones each time', () => {
    // V8's own verdict (%HaveSameMap), in a child process allowed natives syntax.
    // Modes: attach(server) shaping or not; the middleware alone, by default or with shaping off.
    const script = `
      const express = require('express')
      const { aegis } = require('@aegis/express')
      const http = require('node:http')
      const mode = process.argv[1]
      const app = express()
      const shield = aegis({ limiter: false }, mode === 'off' ? { shapeRequests: false } : {})
      app.use(shield)
      app.get('/items/:id', (req, res) => res.json({ id: req.params.id }))
      const server = app.listen(0, '127.0.0.1', async () => {
        if (mode === 'shaped' || mode === 'plain') shield.attach(server, { shapeRequests: mode === 'shaped' })
        const done = []
        server.on('request', (req, res) => res.once('finish', () => done.push([req, res])))
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
        for (let i = 0; i < 30; i++)
          await new Promise((r) => http.get({ port: server.address().port, path: '/items/' + i, agent }, (res) => res.resume().on('end', r)))
        const [a, b] = done.slice(-2)
        console.log(JSON.stringify({ req: %HaveSameMap(a[0], b[0]), res: %HaveSameMap(a[1], b[1]) }))
        agent.destroy()
        await shield.close()
        server.close()
      })`
    const cwd = fileURLToPath(new URL('..', import.meta.url))
    const run = (mode: string) =>
      JSON.parse(
        execFileSync(
          process.execPath,
          ['--allow-natives-syntax', '--input-type=commonjs', '-e', script, mode],
          {
            cwd,
            encoding: 'utf8',
          },
        ),
      ) as { req: boolean; res: boolean }
    expect(run('shaped')).toEqual({ req: true, res: true })
    // Never attached: shaped from the first request on (the last two of 30 are long past learning).
    expect(run('middleware')).toEqual({ req: true, res: true })
    // Node 24's V8 caches these layouts by itself; Node 20's and 22's do not.
    const alone = !REPROTOTYPING_IS_UNCACHED
    expect(run('plain')).toEqual({ req: alone, res: alone })
    expect(run('off')).toEqual({ req: alone, res: alone })
  })
})
