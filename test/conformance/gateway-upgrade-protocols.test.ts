/**
 * Which `Upgrade` protocols cross the gateway, on every adapter (issue
 * 14, finding 10). A route proxies only the protocols of its `upgrades`
 * (WebSocket by default): an `h2c` tunnel would carry requests no guard sees.
 * The upstream here switches to whatever it is asked for, as the one that let
 * requests past a 2-a-minute limit did; each upgrade is admitted and counted
 * by the limiter like any request.
 */
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer } from 'ws'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createAegis, AegisConfigError } from '@aegis/core'
import { rawRequest } from '../helpers/raw-http.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

/** What the switch-anything upstream received: the `Upgrade` field of each upgrade request. */
const offered: string[] = []
let anything: Server
let anythingUrl = ''
let ws: WebSocketServer
let wsUrl = ''
let plain: Upstream

beforeAll(async () => {
  const sockets = new Set<Socket>()
  anything = createServer((_req, res) => res.end('plain'))
  anything.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  anything.on('upgrade', (req, socket: Socket) => {
    offered.push(String(req.headers.upgrade))
    // `/liar` switches to h2c whatever was asked; otherwise to what was offered.
    const to = req.url?.endsWith('/liar') ? 'h2c' : String(req.headers.upgrade)
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${to}\r\n\r\ntunnel`)
  })
  anything.on('close', () => sockets.forEach((s) => s.destroy()))
  anything.listen(0, '127.0.0.1')
  await once(anything, 'listening')
  anythingUrl = `http://127.0.0.1:${(anything.address() as AddressInfo).port}`
  ws = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(ws, 'listening')
  wsUrl = `http://127.0.0.1:${(ws.address() as AddressInfo).port}`
  plain = await startUpstream('plain')
})

afterAll(async () => {
  for (const c of ws.clients) c.terminate()
  await new Promise((r) => ws.close(r))
  anything.closeAllConnections()
  await new Promise((r) => anything.close(r))
  await plain.close()
})

const WEBSOCKET =
  'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
const H2C =
  'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n'

/** One raw request to `path` with `fields`; everything read until the gateway closes (or the 101 head). */
const ask = (app: GatewayApp, path: string, fields: string) =>
  rawRequest(app.port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${fields}\r\n`, { timeoutMs: 3000 })

describe.each(gateways)('Upgrade protocols through the gateway on %s', (_name, createGateway) => {
  let app: GatewayApp | undefined

  afterEach(async () => {
    await app?.close()
    app = undefined
    offered.length = 0
  })

  it('refuses an h2c upgrade with 403 problem+json, and never reaches the upstream', async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [anythingUrl] }], { limiter: false })
    const r = await ask(app, '/ws/x', H2C)
    expect(r.status).toBe(403)
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect((JSON.parse(r.body) as { code: string }).code).toBe('AEGIS_ERR_UPGRADE_REFUSED')
    expect(r.headers.connection).toBe('close')
    expect(r.raw).not.toContain('tunnel')
    expect(offered).toEqual([])
  })

  it('sends on only the protocols the route allows, and refuses a 101 to a protocol not offered', async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [anythingUrl] }], { limiter: false })
    const mixed = await ask(app, '/ws/x', 'Connection: Upgrade\r\nUpgrade: h2c, WebSocket/13\r\n')
    expect(mixed.status).toBe(101)
    expect(offered).toEqual(['WebSocket/13'])
    const lied = await ask(app, '/ws/liar', WEBSOCKET)
    expect(lied.status).toBe(502)
    expect(lied.raw).not.toContain('tunnel')
  })

  it('proxies a protocol the route lists, and none with upgrades: []', async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [anythingUrl], upgrades: ['h2c', 'websocket'] }], {
      limiter: false,
    })
    expect((await ask(app, '/ws/x', H2C)).status).toBe(101)
    await app.close()
    app = await createGateway([{ prefix: '/ws', upstreams: [wsUrl], upgrades: [] }], { limiter: false })
    expect((await ask(app, '/ws/x', WEBSOCKET)).status).toBe(403)
  })

  it('admits and counts each upgrade: the third WebSocket of a 2-a-minute client is a 429', async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [wsUrl] }], {
      limiter: { points: 2, duration: 60 },
    })
    expect((await ask(app, '/ws/a', WEBSOCKET)).status).toBe(101)
    expect((await ask(app, '/ws/b', WEBSOCKET)).status).toBe(101)
    const third = await ask(app, '/ws/c', WEBSOCKET)
    expect(third.status).toBe(429)
    expect(third.headers['retry-after']).toBeDefined()
  })

  it('serves a request whose Upgrade is not a connection option as plain HTTP, without the field', async () => {
    app = await createGateway([{ prefix: '/ws', upstreams: [plain.url] }], { limiter: false })
    // No `Connection: Upgrade`: Node hands it to the app, and Upgrade (hop-by-hop) stops at the gateway.
    const r = await ask(app, '/ws/page', 'Upgrade: h2c\r\n')
    expect(r.status).toBe(200)
    const seen = JSON.parse(r.body) as { headers: IncomingHttpHeaders }
    expect(seen.headers.upgrade).toBeUndefined()
  })
})

describe('the upgrades option', () => {
  it('refuses what is not a protocol name at construction, naming the option', () => {
    expect(() => createAegis({ proxy: [{ upstreams: [wsUrl], upgrades: ['web socket'] }] })).toThrow(
      AegisConfigError,
    )
    try {
      createAegis({ proxy: [{ upstreams: [wsUrl], upgrades: ['web socket'] }] })
    } catch (err) {
      expect((err as AegisConfigError).issues.map((i) => i.path)).toEqual(['proxy.0.upgrades.0'])
    }
  })
})
