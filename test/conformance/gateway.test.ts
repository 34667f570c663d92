/**
 * The gateway on every adapter, against real upstream servers on loopback.
 */
import { request as httpRequest, Agent, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { rawRequest } from '../helpers/raw-http.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
  json: () => Record<string, unknown>
}

const agent = new Agent({ keepAlive: true, maxSockets: 16 })

/** One request with the path sent verbatim (no client-side normalisation). */
function send(
  app: GatewayApp,
  path: string,
  {
    method = 'GET',
    headers = {},
    body,
  }: { method?: string; headers?: Record<string, string>; body?: Buffer | string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: app.port, path, method, headers, agent }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: text,
          json: () => JSON.parse(text) as Record<string, unknown>,
        })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** A port nothing listens on (an upstream that refuses connections). */
async function closedPort(): Promise<number> {
  const u = await startUpstream('gone')
  await u.close()
  return u.port
}

describe.each(gateways)('gateway on %s', (_name, createGateway) => {
  const upstreams: Upstream[] = []
  let app: GatewayApp | undefined

  const start = async (...args: Parameters<typeof createGateway>): Promise<GatewayApp> => {
    app = await createGateway(...args)
    return app
  }
  const upstream = async (...args: Parameters<typeof startUpstream>): Promise<Upstream> => {
    const u = await startUpstream(...args)
    upstreams.push(u)
    return u
  }

  afterEach(async () => {
    await app?.close()
    app = undefined
    await Promise.all(upstreams.splice(0).map((u) => u.close()))
  })

  it('forwards under the prefix: prefix stripped, upstream path and query kept, answer streamed back', async () => {
    const a = await upstream('a')
    const gw = await start([{ prefix: '/api', upstreams: [`${a.url}/base`] }])
    const r = await send(gw, '/api/users/7?x=1&y=%20')
    expect(r.status).toBe(200)
    expect(r.headers['x-upstream']).toBe('a')
    expect(r.json().url).toBe('/base/users/7?x=1&y=%20')
    // Aegis' own headers are on the proxied answer too.
    expect(r.headers['x-content-type-options']).toBe('nosniff')
    expect(r.headers.ratelimit).toMatch(/^"default";r=\d+;t=\d+$/)
    // The app's own routes are untouched.
    expect((await send(gw, '/local')).json()).toEqual({ local: true })
    expect(a.seen).toHaveLength(1)
    // `/apix` is not under `/api`.
    expect((await send(gw, '/apix')).status).toBe(404)
  })

  it('rewritePrefix replaces the prefix; in the proxy option the longest prefix wins', async () => {
    const a = await upstream('a')
    const b = await upstream('b')
    const gw = await start([], {
      proxy: [
        { prefix: '/api', upstreams: [a.url], rewritePrefix: '/v1' },
        { prefix: '/api/admin', upstreams: [b.url] },
      ],
    })
    expect((await send(gw, '/api/users')).json()).toMatchObject({ name: 'a', url: '/v1/users' })
    expect((await send(gw, '/api')).json()).toMatchObject({ name: 'a', url: '/v1' })
    expect((await send(gw, '/api?q=1')).json()).toMatchObject({ name: 'a', url: '/v1?q=1' })
    expect((await send(gw, '/api/admin/keys')).json()).toMatchObject({ name: 'b', url: '/keys' })
  })

  it('strips hop-by-hop fields both ways, drops underscores, writes forwarding fields', async () => {
    const a = await upstream('a', (_req, res, seen) => {
      res.setHeader('connection', 'x-hop')
      res.setHeader('x-hop', 'secret')
      res.setHeader('keep-alive', 'timeout=99')
      res.setHeader('x-kept', 'yes')
      res.end(JSON.stringify(seen))
    })
    const gw = await start([{ prefix: '/api', upstreams: [a.url] }])
    const r = await send(gw, '/api/h', {
      headers: {
        connection: 'keep-alive, x-named',
        'x-named': 'gone',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        te: 'trailers, deflate',
        x_under: 'gone',
        'x-forwarded-for': '203.0.113.9',
        'x-forwarded-host': 'evil.example',
        forwarded: 'for=203.0.113.9',
        'x-request-id': 'req-123',
        'x-real-ip': '203.0.113.9',
        'x-kept': 'yes',
      },
    })
    expect(r.status).toBe(200)
    const h = (r.json() as { headers: IncomingHttpHeaders }).headers
    for (const gone of ['x-named', 'keep-alive', 'proxy-authorization', 'x_under', 'x-real-ip'])
      expect(h[gone], gone).toBeUndefined()
    expect(h.te).toBe('trailers')
    expect(h['x-kept']).toBe('yes')
    // The peer (127.0.0.1) is not a trusted proxy: what the client claimed is dropped.
    expect(h['x-forwarded-for']).toBe('127.0.0.1')
    expect(h['x-forwarded-proto']).toBe('http')
    expect(h['x-forwarded-host']).toBe(`127.0.0.1:${gw.port}`)
    expect(h.forwarded).toBe(`for=127.0.0.1;proto=http;host="127.0.0.1:${gw.port}"`)
    expect(h.host).toBe(a.url.slice('http://'.length))
    expect(h['x-request-id']).toBe('req-123')
    expect(r.headers['x-request-id']).toBe('req-123')
    expect(r.headers['x-hop']).toBeUndefined()
    expect(r.headers['x-kept']).toBe('yes')
    expect(r.headers['keep-alive']).not.toBe('timeout=99')
  })

  it('passes response trailers on with a chunked answer', async () => {
    const a = await upstream('a', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' })
      res.write('part one, ')
      res.addTrailers({ 'x-checksum': 'abc123' })
      res.end('part two')
    })
    const gw = await start([{ prefix: '/api', upstreams: [a.url] }])
    const got = await new Promise<{ body: string; trailers: Record<string, string | undefined> }>(
      (resolve, reject) => {
        httpRequest(
          { host: '127.0.0.1', port: gw.port, path: '/api/t', headers: { te: 'trailers' } },
          (res) => {
            let body = ''
            res.setEncoding('utf8')
            res.on('data', (d: string) => (body += d))
            res.on('end', () => resolve({ body, trailers: res.trailers }))
          },
        )
          .on('error', reject)
          .end()
      },
    )
    expect(got.body).toBe('part one, part two')
    expect(got.trailers['x-checksum']).toBe('abc123')
  })

  it('appends to the forwarding fields of a trusted proxy; generates a request id', async () => {
    const a = await upstream('a')
    const gw = await start([{ prefix: '/', upstreams: [a.url], host: 'preserve' }], {
      trustProxy: ['loopback'],
    })
    const r = await send(gw, '/x', {
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', host: 'shop.example' },
    })
    const h = (r.json() as { headers: IncomingHttpHeaders }).headers
    expect(h['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
    expect(h['x-forwarded-proto']).toBe('https')
    expect(h.host).toBe('shop.example')
    expect(h['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    expect(r.headers['x-request-id']).toBe(h['x-request-id'])
  })

  it('streams a body larger than the default limit when the route allows it; other routes still refuse it', async () => {
    const a = await upstream('a')
    const gw = await start([{ prefix: '/api', upstreams: [a.url], maxBodyBytes: 8 * 1024 * 1024 }])
    const body = Buffer.alloc(5 * 1024 * 1024, 7)
    const r = await send(gw, '/api/upload', {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/octet-stream' },
    })
    expect(r.status).toBe(200)
    expect(r.json().bytes).toBe(body.length)
    const local = await send(gw, '/local/upload', {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/octet-stream' },
    })
    expect(local.status).toBe(413)
    const big = await send(gw, '/api/upload', { method: 'POST', body: Buffer.alloc(9 * 1024 * 1024) })
    expect(big.status).toBe(413)
  })

  it('a chunked upload over the limit never reaches the upstream complete', async () => {
    const a = await upstream('a')
    const gw = await start([{ prefix: '/api', upstreams: [a.url], maxBodyBytes: 64 * 1024 }])
    // The whole upload in one write: the parser meets the limit and the body's end in one go.
    const chunk = `${(16 * 1024).toString(16)}\r\n${'x'.repeat(16 * 1024)}\r\n`
    const raw =
      'PUT /api/put HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n' +
      chunk.repeat(8) +
      '0\r\n\r\n'
    const status = (await rawRequest(gw.port, raw)).raw.slice(0, 12)
    expect(status).toBe('HTTP/1.1 413')
    await new Promise((done) => setTimeout(done, 200))
    expect(a.seen).toEqual([]) // a request the upstream read to its end would be here
  })

  it('answers 502 when the upstream refuses, 504 at the header timeout', async () => {
    const port = await closedPort()
    const slow = await upstream('slow', () => {
      /* never answers */
    })
    const gw = await start([
      { prefix: '/down', upstreams: [`http://127.0.0.1:${port}`] },
      { prefix: '/slow', upstreams: [slow.url], timeouts: { headers: 300 } },
    ])
    const down = await send(gw, '/down/x')
    expect(down.status).toBe(502)
    expect(down.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(down.json()).toMatchObject({ status: 502, code: 'AEGIS_ERR_UPSTREAM_UNAVAILABLE' })
    const t0 = performance.now()
    const late = await send(gw, '/slow/x')
    const took = performance.now() - t0
    expect(late.status).toBe(504)
    expect(late.json()).toMatchObject({ code: 'AEGIS_ERR_UPSTREAM_TIMEOUT' })
    expect(took).toBeGreaterThanOrEqual(250)
    expect(took).toBeLessThan(2_000)
  })

  it('a client that goes away aborts the upstream request', async () => {
    let upstreamClosed!: () => void
    const closed = new Promise<void>((resolve) => (upstreamClosed = resolve))
    const a = await upstream('a', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first chunk\n')
      res.on('close', upstreamClosed) // never ends by itself
    })
    const gw = await start([{ prefix: '/', upstreams: [a.url] }])
    await new Promise<void>((resolve, reject) => {
      const socket = connect(gw.port, '127.0.0.1', () => {
        socket.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
      })
      socket.once('data', () => {
        socket.destroy()
        resolve()
      })
      socket.on('error', reject)
    })
    await closed
    expect(a.seen).toHaveLength(1)
  })

  it('retries an idempotent request on another host after a 503; never a POST', async () => {
    const down = await upstream('down', (_req, res) => {
      res.statusCode = 503
      res.setHeader('x-upstream', 'down')
      res.end('busy')
    })
    const up = await upstream('up')
    const gw = await start([
      { prefix: '/api', name: 'retry', upstreams: [down.url, up.url], outlier: false, breaker: false },
    ])
    for (let i = 0; i < 10; i++) {
      const r = await send(gw, '/api/x')
      expect(r.status).toBe(200)
      expect(r.headers['x-upstream']).toBe('up')
    }
    expect(down.seen.length).toBeGreaterThan(0) // half the first attempts went there
    const posts = await Promise.all(
      Array.from({ length: 10 }, () => send(gw, '/api/x', { method: 'POST', body: 'x' })),
    )
    expect(posts.map((r) => r.status).sort()).toContain(503)
    const scraped = (await gw.core.scrapeMetrics())?.body ?? ''
    expect(scraped).toMatch(/aegis_upstream_retries_total\{route="retry",outcome="retried"\} [1-9]/)
  })

  it('injects faults per route, switchable at run time', async () => {
    const a = await upstream('a')
    const gw = await start([
      { prefix: '/api', upstreams: [a.url], chaos: { abort: { percent: 100, status: 503 } } },
    ])
    const aborted = await send(gw, '/api/x')
    expect(aborted.status).toBe(503)
    expect(aborted.json()).toMatchObject({ code: 'AEGIS_ERR_FAULT_INJECTED' })
    expect(a.seen).toHaveLength(0)
    const route = gw.routes[0]!
    route.setChaos({ delay: { percent: 100, ms: 200 } })
    const t0 = performance.now()
    expect((await send(gw, '/api/x')).status).toBe(200)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190)
    route.setChaos(false)
    expect((await send(gw, '/api/x')).status).toBe(200)
    expect(() => route.setChaos({ abort: { percent: 150 } })).toThrow(/proxy\.chaos\.abort\.percent/)
    // Half of the requests, roughly.
    route.setChaos({ abort: { percent: 50, status: 500 } })
    const statuses = await Promise.all(
      Array.from({ length: 200 }, () => send(gw, '/api/x').then((r) => r.status)),
    )
    const failed = statuses.filter((s) => s === 500).length
    expect(failed).toBeGreaterThan(60)
    expect(failed).toBeLessThan(140)
    // Each switch that took effect is in the audit trail, in order; the refused one is not.
    const switched = gw.core.audit?.entries({ types: ['proxy.chaos'] }) ?? []
    // Named after the route (its prefix; on Express, where the mount path is the prefix, '/').
    expect(switched.every((e) => e.route === route.config.prefix)).toBe(true)
    expect(switched.map((e) => e.chaos)).toEqual([
      { delay: { percent: 100, ms: 200 } },
      false,
      { abort: { percent: 50, status: 500 } },
    ])
  })

  it('respects weights within 5% over 3,000 requests (smooth weighted round robin)', async () => {
    const a = await upstream('a')
    const b = await upstream('b')
    const c = await upstream('c')
    const gw = await start(
      [
        {
          prefix: '/',
          upstreams: [
            { url: a.url, weight: 5 },
            { url: b.url, weight: 3 },
            { url: c.url, weight: 2 },
          ],
        },
      ],
      { limiter: false },
    )
    const counts = { a: 0, b: 0, c: 0 }
    for (let i = 0; i < 300; i++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => send(gw, '/w')))
      for (const r of batch) counts[r.headers['x-upstream'] as keyof typeof counts] += 1
    }
    expect(counts.a + counts.b + counts.c).toBe(3000)
    expect(Math.abs(counts.a / 3000 - 0.5)).toBeLessThan(0.05 * 0.5)
    expect(Math.abs(counts.b / 3000 - 0.3)).toBeLessThan(0.05 * 0.3)
    expect(Math.abs(counts.c / 3000 - 0.2)).toBeLessThan(0.05 * 0.2)
  })
})

describe('gateway path safety', () => {
  // Every spelling of a climb out of the prefix: refused, or forwarded inside the mapped prefix.
  const escapes = [
    '/api/../secret',
    '/api/%2e%2e/secret',
    '/api/%2E%2E%2Fsecret',
    '/api/..%2fsecret',
    '/api/%252e%252e/secret',
    '/api/..\\secret',
    '/api/%5c..%5csecret',
    '/api/..;/secret',
    '/api/.%2e/secret',
    '/api/%c0%ae%c0%ae/secret',
  ]
  let a: Upstream
  const apps: GatewayApp[] = []
  beforeAll(async () => {
    a = await startUpstream('a')
    for (const [, create] of gateways)
      apps.push(
        await create([{ prefix: '/api', upstreams: [`${a.url}/mapped`] }], {
          validator: { traversal: false },
        }),
      )
  })
  afterAll(async () => {
    await Promise.all(apps.map((g) => g.close()))
    await a.close()
  })

  it.each(escapes)('%s never leaves the mapped prefix', async (path) => {
    for (const gw of apps) {
      const before = a.seen.length
      const r = await send(gw, path)
      if (r.status === 200) expect((r.json().url as string).startsWith('/mapped/'), gw.name).toBe(true)
      else expect([400, 404], `${gw.name}: ${r.status}`).toContain(r.status)
      for (const s of a.seen.slice(before))
        expect(s.url.startsWith('/mapped/') || s.url === '/mapped', gw.name).toBe(true)
      for (const s of a.seen.slice(before)) expect(s.url).not.toMatch(/\.\.|%2e%2e|%252e/i)
    }
  })
})

describe('gateway behind body parsers', () => {
  it('re-sends what express.json() and @koa/bodyparser parsed, with a new Content-Length', async () => {
    const a = await startUpstream('a', (req, res, seen) => {
      res.end(JSON.stringify({ ...seen }))
    })
    const { default: express } = await import('express')
    const { aegis: expressAegis } = await import('@aegis/express')
    const eapp = express()
    const eshield = expressAegis()
    eapp.use(eshield)
    eapp.use('/api', express.json(), eshield.proxy({ upstreams: [a.url] }))
    const eserver = eapp.listen(0, '127.0.0.1')
    eshield.attach(eserver)

    const { default: Koa } = await import('koa')
    const { bodyParser } = await import('@koa/bodyparser')
    const { aegis: koaAegis } = await import('@aegis/koa')
    const kapp = new Koa()
    const kshield = koaAegis()
    kapp.use(kshield)
    kapp.use(bodyParser())
    kapp.use(kshield.proxy({ prefix: '/api', upstreams: [a.url] }))
    const kserver = kapp.listen(0, '127.0.0.1')
    kshield.attach(kserver)

    try {
      for (const server of [eserver, kserver]) {
        if (!server.listening) await new Promise((r) => server.once('listening', r))
        const port = (server.address() as { port: number }).port
        const payload = JSON.stringify({ name: 'ada', tags: ['x'] })
        const r = await send({ port } as GatewayApp, '/api/people', {
          method: 'POST',
          body: payload,
          headers: { 'content-type': 'application/json' },
        })
        expect(r.status).toBe(200)
        const seen = r.json() as { bytes: number; headers: IncomingHttpHeaders }
        expect(seen.bytes).toBe(Buffer.byteLength(payload))
        expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(payload)))
      }
    } finally {
      await Promise.all([eshield.close(), kshield.close()])
      await a.close()
    }
  })

  it('Fastify with http2 and proxy routes is refused at startup, naming the option', async () => {
    const { default: Fastify } = await import('fastify')
    const { aegis } = await import('@aegis/fastify')
    const app = Fastify({ http2: true })
    await expect(
      app.register(aegis, { proxy: [{ prefix: '/api', upstreams: ['http://127.0.0.1:9'] }] }).ready(),
    ).rejects.toThrow(/proxy: proxy routes on a Fastify server with http2: true are not supported yet/)
    await app.close().catch(() => undefined)
  })
})
