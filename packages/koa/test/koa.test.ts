import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import Koa from 'koa'
import { describe, expect, it } from 'vitest'
import { aegis } from '../src/index.js'

async function start(app: Koa) {
  const server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

describe('@aegis/koa', () => {
  it('keeps security headers, and the error own headers, when a handler throws', async () => {
    const app = new Koa()
    app.silent = true
    const shield = aegis()
    app.use(shield)
    app.use((ctx) => {
      ctx.set('x-lost', 'yes')
      ctx.throw(429, 'slow down', { headers: { 'retry-after': '5' } })
    })
    const { url, server } = await start(app)
    shield.attach(server)
    const res = await fetch(url)
    expect(res.status).toBe(429)
    expect(res.headers.get('x-frame-options')).toBe('DENY')
    expect(res.headers.get('retry-after')).toBe('5')
    await shield.close()
  })

  it('serves metrics as a middleware and exposes ctx.state.aegis', async () => {
    const app = new Koa()
    const shield = aegis()
    app.use(shield)
    app.use(async (ctx, next) => {
      if (ctx.path === '/metrics') return void (await shield.metrics(ctx, next))
      ctx.body = { client: ctx.state.aegis?.client.ip }
    })
    const { url, server } = await start(app)
    shield.attach(server)
    expect(await (await fetch(`${url}/x`)).json()).toEqual({ client: '127.0.0.1' })
    const text = await (await fetch(`${url}/metrics`)).text()
    expect(text).toMatch(/aegis_http_requests_total\{method="GET",route="\/x",status_class="2xx"\} 1/)
    await shield.close()
  })
})
