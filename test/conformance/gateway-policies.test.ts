/**
 * Route policies cover every spelling of their path on gateway routes: dot
 * segments (`/api/./login`, `/api/%2e/login`) are normalised before the guards
 * match (RFC 3986 §5.2.4) and the upstream gets that same normalised path; on
 * Express, a proxy mounted without a global `app.use(shield)` admits the whole
 * target, not what the mount path left of it.
 */
import express from 'express'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AegisOptions } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { rawRequest } from '../helpers/raw-http.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, served, type GatewayApp, type GatewayFactory } from './gateway-apps.js'

let upstream: Upstream
beforeAll(async () => {
  upstream = await startUpstream('api')
})
afterAll(() => upstream.close())

const options: AegisOptions = { limiter: { routes: { 'POST /api/login': { points: 2, duration: 60 } } } }

/** Express with the proxy as the only Aegis middleware: `app.use('/api', shield.proxy(...))`. */
const expressProxyOnly: GatewayFactory = async (routes, opts = {}) => {
  const app = express()
  const shield = expressAegis(opts)
  const mounted = routes.map(({ prefix = '/', ...route }) => {
    const proxy = shield.proxy(route)
    app.use(prefix, proxy)
    return proxy.route
  })
  return served('express', app.listen(0, '127.0.0.1'), shield, mounted)
}

const post = (app: GatewayApp, path: string): ReturnType<typeof rawRequest> =>
  rawRequest(app.port, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`)

describe.each([...gateways, ['express, proxy mounted alone', expressProxyOnly] as const])(
  '%s: a route policy on a gateway route',
  (_name, make) => {
    let app: GatewayApp
    beforeAll(async () => {
      app = await make([{ prefix: '/api', upstreams: [upstream.url] }], options)
    })
    afterAll(() => app.close())

    it('counts /api/login, /api/./login and /api/%2e/login alike, and forwards /login for each', async () => {
      const before = upstream.seen.length
      const statuses = []
      for (const path of ['/api/./login', '/api/%2e/login', '/api/login', '/api/%2E/./login'])
        statuses.push((await post(app, path)).status)
      expect(statuses).toEqual([200, 200, 429, 429])
      expect(upstream.seen.slice(before).map((s) => s.url)).toEqual(['/login', '/login'])
    })

    it('leaves other paths of the route to the default policy', async () => {
      const res = await post(app, '/api/./other')
      expect(res.status).toBe(200)
      expect(upstream.seen.at(-1)?.url).toBe('/other')
    })
  },
)
