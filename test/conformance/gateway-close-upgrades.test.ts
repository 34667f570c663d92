/**
 * `close()` with a proxied WebSocket open, on every adapter (issue 14,
 * finding 11): upgraded sockets have left Node's HTTP machinery, so
 * `server.closeAllConnections()` never ends them and the server's close
 * waited for them forever. They end at `closeTimeout`, with the upstream
 * connection behind each.
 */
import { once } from 'node:events'
import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWsUpstream, type WsUpstream } from '../helpers/ws-upstream.js'
import { gateways } from './gateway-apps.js'

let echo: WsUpstream

beforeAll(async () => {
  echo = await startWsUpstream((socket) => socket.on('message', (data) => socket.send(data)))
})

afterAll(() => echo.close())

describe.each(gateways)('close() with proxied WebSockets open on %s', (_name, createGateway) => {
  it('resolves soon after closeTimeout, the tunnels and their upstream connections closed', async () => {
    const app = await createGateway([{ prefix: '/ws', upstreams: [echo.url] }], {
      limiter: false,
      closeTimeout: 500,
    })
    const clients = await Promise.all(
      [1, 2].map(async () => {
        const ws = new WebSocket(`ws://127.0.0.1:${app.port}/ws/chat`)
        ws.on('error', () => undefined)
        await once(ws, 'open')
        ws.send('ping')
        const [echo] = (await once(ws, 'message')) as [Buffer]
        expect(echo.toString()).toBe('ping')
        return ws
      }),
    )
    expect(echo.server.clients.size).toBe(2)
    const closed = clients.map((ws) => once(ws, 'close'))

    const t0 = performance.now()
    await Promise.race([
      app.close(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('close() did not resolve in 5 s')), 5000)),
    ])
    const ms = performance.now() - t0
    // In-flight work gets closeTimeout; then the tunnels end.
    expect(ms).toBeLessThan(1500)
    expect(ms).toBeGreaterThanOrEqual(450)

    await Promise.all(closed)
    expect(clients.every((ws) => ws.readyState === WebSocket.CLOSED)).toBe(true)
    expect(app.server.listening).toBe(false)
    const open = await new Promise<number>((resolve, reject) =>
      app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    )
    expect(open).toBe(0)
    // The upstream side of each tunnel is closed too.
    const end = Date.now() + 2000
    while (echo.server.clients.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
    expect(echo.server.clients.size).toBe(0)
  })
})
