/**
 * WebSocket upgrades through the gateway on every adapter: a real `ws`
 * echo server upstream, undici's WebSocket client in front. Upgrades are
 * admitted like any request (a denied client gets its 403 on the socket).
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { WebSocket } from 'undici'
import { WebSocketServer } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawRequest } from '../helpers/raw-http.js'
import { waitFor } from '../helpers/wait.js'
import { refusedUrl, startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

let upstream: WebSocketServer
let upstreamUrl = ''
// An upstream that answers upgrade requests like any other: 403 with a body.
let refusing: Upstream

beforeAll(async () => {
  upstream = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(upstream, 'listening')
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
  upstream.on('connection', (socket, req) => {
    socket.send(`hello ${req.url} ${String(req.headers['x-forwarded-for'])}`)
    socket.on('message', (data, binary) => socket.send(data, { binary }))
  })
  refusing = await startUpstream('refusing', (_req, res) => {
    res.writeHead(403, {
      'content-type': 'application/json',
      'x-reason': 'no-ticket',
      connection: 'close, x-secret',
      'x-secret': 'hop',
    })
    res.end('{"error":"no ticket"}')
  })
})

afterAll(async () => {
  for (const c of upstream.clients) c.terminate()
  await new Promise((r) => upstream.close(r))
  await refusing.close()
})

/** Send a raw WebSocket handshake to `path`; resolve with everything read until the server closes. */
const handshake = async (port: number, path: string): Promise<string> =>
  (
    await rawRequest(
      port,
      `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      { waitForClose: true, timeoutMs: 5000 },
    )
  ).raw

/** Open a WebSocket, collect `n` messages after sending `send`, close. */
async function converse(url: string, send: (string | Buffer)[], n: number): Promise<(string | Buffer)[]> {
  const ws = new WebSocket(url)
  ws.binaryType = 'arraybuffer'
  const got: (string | Buffer)[] = []
  const done = new Promise<void>((resolve, reject) => {
    ws.addEventListener('message', (e) => {
      got.push(typeof e.data === 'string' ? e.data : Buffer.from(e.data as ArrayBuffer))
      if (got.length === n) resolve()
    })
    ws.addEventListener('error', () => reject(new Error('websocket error')))
    ws.addEventListener('close', (e) =>
      got.length < n ? reject(new Error(`closed early: ${e.code}`)) : resolve(),
    )
  })
  done.catch(() => undefined) // awaited below once open; an upgrade that fails rejects `open` first
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve())
    ws.addEventListener('error', () => reject(new Error('websocket did not open')))
  })
  for (const m of send) ws.send(m)
  await done
  ws.close()
  return got
}

describe.each(gateways)('WebSocket through the gateway on %s', (_name, createGateway) => {
  let app: GatewayApp

  beforeAll(async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [upstreamUrl] }], { limiter: false })
  })
  afterAll(async () => {
    await app.close()
  })

  it('echoes text and binary frames', async () => {
    const payload = Buffer.alloc(100_000, 7)
    const got = await converse(`ws://127.0.0.1:${app.port}/ws/chat?room=1`, ['ping', payload], 3)
    expect(got[0]).toBe('hello /chat?room=1 127.0.0.1')
    expect(got[1]).toBe('ping')
    expect(Buffer.compare(got[2] as Buffer, payload)).toBe(0)
  })

  it("relays an upstream's refusal of the upgrade (status, fields, body) and closes", async () => {
    const refused = await createGateway([{ prefix: '/ws', upstreams: [refusing.url] }], { limiter: false })
    try {
      const answer = await handshake(refused.port, '/ws/chat')
      const [head = '', body] = answer.split('\r\n\r\n')
      expect(head).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/)
      expect(head).toMatch(/\r\nx-reason: no-ticket/i)
      expect(head).toMatch(/\r\nconnection: close/i)
      expect(head).not.toMatch(/x-secret/i) // named in the upstream's Connection: hop-by-hop
      expect(body).toBe('{"error":"no ticket"}')
    } finally {
      await refused.close()
    }
  })

  it('observes an upgrade with the status its client was answered: 101, a relayed 403, a 502', async () => {
    const seen: { path: string; status: number }[] = []
    const logger = {
      info: (obj: object) => void seen.push(obj as { path: string; status: number }),
      warn() {},
      error() {},
    }
    const options = { limiter: false as const, logger, accessLog: true }
    const apps = [
      await createGateway([{ prefix: '/ws', upstreams: [upstreamUrl] }], options),
      await createGateway([{ prefix: '/ws', upstreams: [refusing.url] }], options),
      await createGateway([{ prefix: '/ws', upstreams: [await refusedUrl()] }], options),
    ]
    try {
      for (const [i, a] of apps.entries())
        await rawRequest(
          a.port,
          `GET /ws/${i} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
        )
      // Observed once the handshake is over, a moment after the answer went out.
      await waitFor('the three handshakes observed', () => seen.length === 3)
      const statusOf = (path: string): number | undefined => seen.find((s) => s.path === path)?.status
      expect([statusOf('/ws/0'), statusOf('/ws/1'), statusOf('/ws/2')]).toEqual([101, 403, 502])
      // Counted by status too: the refused upgrade is no 1xx.
      const text = (await apps[2]?.core.scrapeMetrics())?.body ?? ''
      expect(text).toMatch(/aegis_http_requests_total\{[^}]*status_class="5xx"[^}]*\} 1/)
      expect(text).not.toMatch(/status_class="1xx"/)
    } finally {
      for (const a of apps) await a.close()
    }
  })

  it('refuses an upgrade Aegis refuses as a request', async () => {
    const denied = await createGateway([{ prefix: '/ws', upstreams: [upstreamUrl] }], {
      limiter: { deny: ['127.0.0.1'] },
    })
    try {
      await expect(converse(`ws://127.0.0.1:${denied.port}/ws/chat`, [], 1)).rejects.toThrow()
      const res = await fetch(`http://127.0.0.1:${denied.port}/ws/chat`)
      expect(res.status).toBe(403)
    } finally {
      await denied.close()
    }
  })
})

describe('servers without upgrade routes', () => {
  it('still serve a request that carries an Upgrade header (h2c) as a plain request', async () => {
    const { default: express } = await import('express')
    const { aegis } = await import('@aegis/express')
    const app = express()
    const shield = aegis()
    app.use(shield)
    app.get('/', (_req, res) => res.send('plain'))
    const server = app.listen(0, '127.0.0.1')
    await once(server, 'listening')
    shield.attach(server)
    try {
      const port = (server.address() as AddressInfo).port
      const { raw: answer } = await rawRequest(
        port,
        'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
      )
      expect(answer).toMatch(/^HTTP\/1\.1 200/)
      expect(answer).toContain('plain')
    } finally {
      await shield.close()
    }
  })
})
