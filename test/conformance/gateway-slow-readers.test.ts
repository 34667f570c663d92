/**
 * Clients that never read their answer, on every adapter (issue 14,
 * finding 4): a real upstream serving 32 MiB, more slow readers than the
 * route has connections (raw sockets that send a request and stop reading:
 * Node stops reading from the kernel once 16 KiB wait, so the gateway's
 * socket fills after about 4 MiB on loopback, the upstream's about as much
 * later: 32 MiB never fit in between). Other clients of the route
 * get a fast 503 while every connection is held — never a hang —, other
 * routes to the same upstream and the app itself are not affected, and once
 * the send timeout cuts the slow readers the route serves again.
 */
import { Agent } from 'node:http'
import { connect, type Socket } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, timedGet, type GatewayApp, type TimedReply } from './gateway-apps.js'
import { waitFor } from '../helpers/wait.js'

const BIG = 32 * 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 'a')
const CONNECTIONS = 4
const SLOW = CONNECTIONS + 2
const SEND_TIMEOUT = 1000
const QUEUE_TIMEOUT = 300

let upstream: Upstream
/** Big answers the upstream could not finish: its connection was closed under it. */
let cut = 0

beforeAll(async () => {
  upstream = await startUpstream('big', (req, res) => {
    if (req.url !== '/big') {
      res.setHeader('content-type', 'application/json')
      return res.end(JSON.stringify({ url: req.url }))
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BIG) })
    res.on('close', () => {
      if (!res.writableFinished) cut++
    })
    let sent = 0
    const pump = (): void => {
      while (sent < BIG && !res.destroyed) {
        sent += CHUNK.length
        const more = res.write(CHUNK)
        if (sent >= BIG) return void res.end()
        if (!more) return void res.once('drain', pump)
      }
    }
    pump()
  })
})

afterAll(async () => {
  await upstream.close()
})

const agent = new Agent({ keepAlive: false })

type Reply = TimedReply

/** One GET, bounded: a hang fails the test instead of stalling it. */
const get = (app: GatewayApp, path: string): Promise<Reply> => timedGet(app, path, agent, 5000)

/**
 * A client that sends its request and reads nothing until `read()`: then
 * everything until the connection closes or stays quiet for 300 ms.
 */
function slowReader(app: GatewayApp, path: string): { socket: Socket; read(): Promise<string> } {
  const socket = connect({ host: '127.0.0.1', port: app.port })
  socket.pause()
  socket.on('error', () => undefined) // the gateway cutting it is the point
  socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`)
  return {
    socket,
    read: () =>
      new Promise((resolve) => {
        const chunks: Buffer[] = []
        const done = (): void => {
          clearTimeout(timer)
          resolve(Buffer.concat(chunks).toString('latin1'))
        }
        const timer = setTimeout(done, 300)
        socket.on('data', (c: Buffer) => {
          chunks.push(c)
          timer.refresh()
        })
        socket.once('close', done)
        socket.resume()
      }),
  }
}

describe.each(gateways)('slow readers through the gateway on %s', (_name, createGateway) => {
  let app: GatewayApp
  const slow: Socket[] = []

  beforeAll(async () => {
    cut = 0
    app = await createGateway(
      [
        {
          prefix: '/svc',
          upstreams: [upstream.url],
          connections: CONNECTIONS,
          maxPending: 2,
          timeouts: { queue: QUEUE_TIMEOUT, send: SEND_TIMEOUT },
          retry: false,
        },
        // Another route to the same upstream: its own pool.
        { prefix: '/other', upstreams: [upstream.url] },
      ],
      { limiter: false },
    )
  })
  afterEach(() => {
    for (const s of slow.splice(0)) s.destroy()
  })
  afterAll(async () => {
    await app.close()
  })

  it('answers the rest fast while slow readers hold every connection, then cuts them and serves again', async () => {
    const before = upstream.seen.filter((s) => s.url === '/big').length
    const readers = Array.from({ length: SLOW }, () => slowReader(app, '/svc/big'))
    slow.push(...readers.map((r) => r.socket))
    // The route's connections are all taken by slow readers; the other two wait (and get a 503 they never read).
    await waitFor(
      'the slow readers to hold every connection',
      () => upstream.seen.filter((s) => s.url === '/big').length - before >= CONNECTIONS,
    )
    const stalledAt = performance.now()

    // Saturated: an answer within the queue timeout, never a hang. Two wait (maxPending), the third is refused at once.
    const saturated = await Promise.all([
      get(app, '/svc/small'),
      get(app, '/svc/small'),
      get(app, '/svc/small'),
    ])
    for (const r of saturated) {
      expect(r.status).toBe(503)
      expect(r.code).toBe('AEGIS_ERR_NO_UPSTREAM')
      expect(r.ms).toBeLessThan(QUEUE_TIMEOUT + 1000)
    }
    expect(Math.min(...saturated.map((r) => r.ms))).toBeLessThan(QUEUE_TIMEOUT)

    // Other routes to the same upstream, and the app, are not starved.
    expect((await get(app, '/other/small')).status).toBe(200)
    expect((await get(app, '/local')).status).toBe(200)

    // The send timeout cuts the readers holding connections, which frees the upstream connections.
    const cutBefore = cut
    await waitFor(
      'the send timeout to cut the slow readers',
      () => cut - cutBefore >= CONNECTIONS,
      SEND_TIMEOUT + 3000,
    )
    expect(performance.now() - stalledAt).toBeLessThan(SEND_TIMEOUT + 3000)
    // What the slow readers find once they read: a 32 MiB answer cut short, or the 503 of a request that could not wait.
    const answers = await Promise.all(readers.map((r) => r.read()))
    const truncated = answers.filter((a) => a.startsWith('HTTP/1.1 200') && a.length < BIG)
    const refused = answers.filter((a) => a.startsWith('HTTP/1.1 503'))
    expect(truncated).toHaveLength(CONNECTIONS)
    expect(refused).toHaveLength(SLOW - CONNECTIONS)
    expect(readers.filter((r) => r.socket.destroyed).length).toBeGreaterThanOrEqual(CONNECTIONS)

    // The route serves again.
    await waitFor('the route to serve again', async () => (await get(app, '/svc/small')).status === 200)
  })
})
