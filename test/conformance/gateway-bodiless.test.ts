/**
 * Answers without content through the gateway, on every adapter, against
 * a real upstream: a 304 carrying the Content-Length its 200 would have had
 * (RFC 9110 §8.6 allows it), a 204, and HEAD. undici holds such a length
 * against the connection; the client must still get the answer, whole, and the
 * upstream must never count it as a failure (issue 14, finding 5).
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

const BODY = 'x'.repeat(1234)
const ETAG = '"v1"'
const LAST_MODIFIED = 'Tue, 01 Dec 2026 10:00:00 GMT'

let upstream: Upstream

beforeAll(async () => {
  upstream = await startUpstream('cond', (req, res) => {
    const validators = {
      etag: ETAG,
      'last-modified': LAST_MODIFIED,
      'cache-control': 'max-age=60',
      'content-length': String(BODY.length),
    }
    if (req.method === 'DELETE') {
      // Not allowed on a 204 (RFC 9110 §8.6), sent anyway by some servers: the gateway drops it.
      res.writeHead(204, { 'content-length': '5', 'x-deleted': 'yes' })
      return res.end()
    }
    if (req.headers['if-none-match'] === ETAG) {
      res.writeHead(304, validators)
      return res.end()
    }
    res.writeHead(200, { ...validators, 'content-type': 'text/plain' })
    res.end(req.method === 'HEAD' ? undefined : BODY)
  })
})

afterAll(async () => {
  await upstream.close()
})

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

// Keep-alive towards the gateway: a reset of the client's connection fails the request.
const agent = new Agent({ keepAlive: true, maxSockets: 4 })

function send(app: GatewayApp, method: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: app.port, path: '/svc/doc', method, headers, agent },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        )
        res.on('error', reject)
      },
    )
    req.setTimeout(5000, () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

describe.each(gateways)('answers without content through the gateway on %s', (_name, createGateway) => {
  let app: GatewayApp
  const changes: string[] = []

  beforeAll(async () => {
    // Ejection after 3 local failures, a breaker opening after 5 failed requests: 30 conditional GETs
    // would trip both many times over if a 304 counted as a failure.
    app = await createGateway(
      [
        {
          prefix: '/svc',
          upstreams: [upstream.url],
          outlier: { consecutiveLocalFailures: 3 },
          breaker: { volumeThreshold: 5 },
        },
      ],
      { limiter: false },
    )
    const events = app.routes[0]!.events
    events.on('ejected', () => changes.push('ejected'))
    events.on('breaker', ({ state }: { state: string }) => changes.push(`breaker ${state}`))
  })
  afterAll(async () => {
    await app.close()
  })

  it('passes 30 conditional GETs answered 304 with Content-Length through whole, never failing the upstream', async () => {
    for (let i = 0; i < 30; i++) {
      const r = await send(app, 'GET', { 'if-none-match': ETAG })
      expect(r.status).toBe(304)
      expect(r.headers.etag).toBe(ETAG)
      expect(r.headers['last-modified']).toBe(LAST_MODIFIED)
      expect(r.headers['cache-control']).toBe('max-age=60')
      expect(r.headers['content-length']).toBe(String(BODY.length))
      expect(r.body).toBe('')
    }
    expect(changes).toEqual([])
    // The route still serves the full answer.
    const full = await send(app, 'GET')
    expect(full.status).toBe(200)
    expect(full.body).toBe(BODY)
  })

  it('passes a 204 through without its (illegal) Content-Length, and HEAD with the length of its GET', async () => {
    const deleted = await send(app, 'DELETE')
    expect(deleted.status).toBe(204)
    expect(deleted.headers['x-deleted']).toBe('yes')
    expect(deleted.headers['content-length']).toBeUndefined()
    expect(deleted.body).toBe('')
    for (let i = 0; i < 5; i++) {
      const head = await send(app, 'HEAD')
      expect(head.status).toBe(200)
      expect(head.headers['content-length']).toBe(String(BODY.length))
      expect(head.body).toBe('')
    }
    expect(changes).toEqual([])
  })
})
