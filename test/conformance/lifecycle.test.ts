import { createServer, request, type IncomingMessage } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createAegis, type Logger } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'

const get = (port: number, path: string): Promise<{ res: IncomingMessage; body: string }> =>
  new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ res, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })

const handles = (): string[] =>
  process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'FSReqCallback')
const count = (list: string[], kind: string): number => list.filter((r) => r === kind).length

const warnings = () => {
  const seen: { code?: unknown }[] = []
  const logger: Logger = { info() {}, error() {}, warn: (obj) => void seen.push(obj) }
  return { logger, seen }
}

/** One app per framework with a slow route, attached (Express, Koa, node:http) or registered (Fastify). */
const servers = {
  async express(options = {}) {
    const app = express()
    const shield = expressAegis(options)
    app.use(shield)
    app.get('/', (_req, res) => res.send('ok'))
    app.get('/slow', (_req, res) => void setTimeout(() => res.send('slow done'), 150))
    app.get('/hang', () => {})
    const server = app.listen(0, '127.0.0.1')
    shield.attach(server)
    await once(server, 'listening')
    return { port: (server.address() as AddressInfo).port, close: () => shield.close(), core: shield.core }
  },
  async koa(options = {}) {
    const app = new Koa()
    const shield = koaAegis(options)
    app.use(shield)
    app.use(async (ctx) => {
      if (ctx.path === '/slow') await new Promise((r) => setTimeout(r, 150))
      if (ctx.path === '/hang') await new Promise(() => {})
      ctx.body = ctx.path === '/slow' ? 'slow done' : 'ok'
    })
    const server = app.listen(0, '127.0.0.1')
    shield.attach(server)
    await once(server, 'listening')
    return { port: (server.address() as AddressInfo).port, close: () => shield.close(), core: shield.core }
  },
  async fastify(options = {}) {
    const app = Fastify({ requestTimeout: 10_000 })
    await app.register(fastifyAegis, options)
    app.get('/', () => 'ok')
    app.get('/slow', async () => {
      await new Promise((r) => setTimeout(r, 150))
      return 'slow done'
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return { port: (app.server.address() as AddressInfo).port, close: () => app.close(), core: app.aegis }
  },
  async node(options = {}) {
    const core = createAegis(options)
    const server = createServer(
      core.handler((req, res) => {
        if (req.url === '/slow') setTimeout(() => res.end('slow done'), 150)
        else if (req.url !== '/hang') res.end('ok')
      }),
    )
    core.attach(server)
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    return { port: (server.address() as AddressInfo).port, close: () => core.close(), core }
  },
}

describe.each(['express', 'fastify', 'koa', 'node'] as const)('%s lifecycle', (name) => {
  it('close() is idempotent and leaves no active handles', async () => {
    const before = handles()
    const s = await servers[name]()
    for (let i = 0; i < 3; i++) expect((await get(s.port, '/')).res.statusCode).toBe(200)
    const first = s.close()
    const second = s.close()
    await Promise.all([first, second])
    await s.close()
    expect(s.core.closed).toBe(true)
    // Poll with plain timeouts (vi.waitFor's own timer would count as a handle).
    const kinds = ['TCPServerWrap', 'TCPSocketWrap', 'Timeout']
    const extra = (): string[] => kinds.filter((k) => count(handles(), k) > count(before, k))
    for (let i = 0; i < 40 && extra().length > 0; i++) await new Promise((r) => setTimeout(r, 25))
    expect(extra()).toEqual([])
  })

  it('close() lets an in-flight request finish', async () => {
    const s = await servers[name]()
    const inflight = get(s.port, '/slow')
    await new Promise((r) => setTimeout(r, 30))
    const closed = s.close()
    const { res, body } = await inflight
    expect(res.statusCode).toBe(200)
    expect(body).toBe('slow done')
    await closed
  })
})

describe('graceful close with a deadline', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it.each(['express', 'koa', 'node'] as const)(
    '%s: close() cuts requests still running after closeTimeout',
    async (name) => {
      const s = await servers[name]({ closeTimeout: 60_000 })
      const hung = get(s.port, '/hang').then(
        () => 'answered',
        (err: NodeJS.ErrnoException) => err.code,
      )
      await new Promise((r) => setTimeout(r, 30)) // the request is in the handler
      // Fake only the deadline timer: sockets and the server stay real.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
      let closed = false
      const closing = s.close().then(() => (closed = true))
      await vi.advanceTimersByTimeAsync(59_000)
      expect(closed).toBe(false) // still draining: the deadline has not passed
      await vi.advanceTimersByTimeAsync(1_000)
      vi.useRealTimers()
      await closing
      expect(await hung).toBe('ECONNRESET')
    },
  )
})

describe('slowloris warning', () => {
  it('warns once, with a code, when the server has no request timeout (Fastify default)', async () => {
    const { logger, seen } = warnings()
    const app = Fastify()
    await app.register(fastifyAegis, { logger })
    app.get('/', () => 'ok')
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as AddressInfo).port
    await get(port, '/')
    await get(port, '/')
    expect(seen.filter((w) => w.code === 'AEGIS_WARN_NO_REQUEST_TIMEOUT')).toHaveLength(1)
    await app.close()
  })

  it('stays quiet when the server has one (Node default)', async () => {
    const { logger, seen } = warnings()
    const s = await servers.express({ logger })
    await get(s.port, '/')
    expect(seen).toHaveLength(0)
    await s.close()
  })
})

describe('strict parsing', () => {
  it('attach() refuses a server that parses leniently', async () => {
    const { createServer } = await import('node:http')
    const server = createServer({ insecureHTTPParser: true })
    const shield = expressAegis()
    expect(() => shield.attach(server)).toThrow(expect.objectContaining({ code: 'AEGIS_ERR_LENIENT_PARSER' }))
    await shield.close()
  })

  it('Fastify with insecureHTTPParser fails at startup', async () => {
    const { createServer } = await import('node:http')
    const app = Fastify({ serverFactory: (handler) => createServer({ insecureHTTPParser: true }, handler) })
    await expect(app.register(fastifyAegis).ready()).rejects.toMatchObject({
      code: 'AEGIS_ERR_LENIENT_PARSER',
    })
  })
})

describe('parser errors on attached servers', () => {
  it.each(['express', 'koa', 'node'] as const)(
    '%s: answered with problem+json and the security headers',
    async (name) => {
      const s = await servers[name]()
      const { rawRequest } = await import('../helpers/raw-http.js')
      const res = await rawRequest(s.port, 'GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n')
      expect(res.status).toBe(400)
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
      expect(JSON.parse(res.body)).toMatchObject({ code: 'AEGIS_ERR_BAD_REQUEST' })
      expect(res.headers['x-content-type-options']).toBe('nosniff')
      expect(res.raw.match(/\r\nconnection: close/gi)).toHaveLength(1)
      await s.close()
    },
  )
})
