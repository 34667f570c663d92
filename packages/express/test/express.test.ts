import { once } from 'node:events'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import express from 'express'
import { describe, expect, it } from 'vitest'
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
