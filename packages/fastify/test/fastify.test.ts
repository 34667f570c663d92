import Fastify from 'fastify'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { aegis } from '../src/index.js'

describe('@aegis/fastify', () => {
  it('decorates app.aegis and request.aegis, and closing the app closes Aegis', async () => {
    const app = Fastify()
    await app.register(aegis)
    app.get('/', (request) => ({ client: request.aegis?.client.ip }))
    const res = await app.inject({ method: 'GET', url: '/', remoteAddress: '192.0.2.10' } as never)
    expect(res.json()).toEqual({ client: '192.0.2.10' })
    expect(res.headers['x-frame-options']).toBe('DENY')
    expect(app.aegis.closed).toBe(false)
    await app.close()
    expect(app.aegis.closed).toBe(true)
  })

  it('leaves routes with config.aegis = false alone', async () => {
    const registry = new Registry()
    const app = Fastify()
    await app.register(aegis, { metrics: { registry } })
    app.get('/healthz', { config: { aegis: false } }, () => 'ok')
    app.get('/', () => 'hi')
    const health = await app.inject({ method: 'GET', url: '/healthz' })
    expect(health.body).toBe('ok')
    expect(health.headers['x-frame-options']).toBeUndefined()
    await app.inject({ method: 'GET', url: '/' })
    const text = await registry.metrics()
    expect(text).toContain('route="/"')
    expect(text).not.toContain('healthz')
    await app.close()
  })

  it('answers rejections through the reply, with problem+json', async () => {
    const app = Fastify()
    await app.register(aegis, { validator: { methods: ['GET'] } })
    app.post('/', () => 'never')
    const res = await app.inject({ method: 'POST', url: '/' })
    expect(res.statusCode).toBe(405)
    expect(res.headers.allow).toBe('GET')
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
    await app.close()
  })

  it('fails registration with AegisConfigError on bad options', async () => {
    const app = Fastify()
    await expect(app.register(aegis, { cors: { origin: 'not an origin' } }).ready()).rejects.toThrow(
      /cors\.origin/,
    )
  })
})
