/**
 * The plain `node:http` adapter, `createServer(aegis.handler(app))`, where it owns
 * what a framework would: the app's failures. Whatever the app does — throw, reject
 * with anything, reject from another realm, fail after it started or finished its
 * answer, touch its response from a timer after failing — the process sees no
 * uncaught exception, every answer reaches its own request, and no connection hangs.
 * (The conformance suite runs its scenarios over this adapter too: apps.ts `nodeApp`.)
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import vm from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis, type AegisOptions } from '@aegis/core'
import { converse, parseResponses, rawRequest, writeChunked } from '../helpers/raw-http.js'
import { failOnUncaught } from '../helpers/uncaught.js'
import { recorder } from '../helpers/recorder.js'
import { expectCutBehindSlow } from '../helpers/pipelined.js'
import { listen } from './apps.js'

const uncaught = failOnUncaught()

type App = (req: IncomingMessage, res: ServerResponse) => unknown

const HEAD = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`
const CLOSE = 'Connection: close\r\n'
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Routes every test app shares: `/ok` answers at once, `/slow` after 100 ms. */
const common: Record<string, App> = {
  '/ok': (_req, res) => res.end('ok'),
  '/slow': (_req, res) => void setTimeout(() => res.end('slow'), 100),
}

let core: Aegis | undefined
afterEach(async () => {
  await core?.close()
  core = undefined
})

/** `routes` (and the common ones) behind `core.handler()` on a real socket. */
async function serve(routes: Record<string, App>, options: AegisOptions = {}) {
  const logger = recorder()
  const all = { ...common, ...routes }
  const app: App = (req, res) => {
    const route = all[req.url ?? '']
    if (route !== undefined) return route(req, res)
    res.statusCode = 404
    res.end()
  }
  core = createAegis({ logger, ...options })
  const server = createServer(core.handler(app))
  core.attach(server)
  const port = await listen(server)
  return { port, logger, core }
}

const { proxy: revoked, revoke } = Proxy.revocable({}, {})
revoke()

describe('node:http handler: an app that fails before answering', () => {
  it.each<[string, App]>([
    [
      'throws',
      () => {
        throw new Error('boom')
      },
    ],
    ['rejects', () => Promise.reject(new Error('boom'))],
    // Apps reject and throw with anything: that is what these cases are about.
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    ['rejects with null', () => Promise.reject(null)],
    [
      'throws a revoked Proxy (any read of it throws)',
      () => {
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw revoked
      },
    ],
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    ['rejects with a revoked Proxy', () => Promise.reject(revoked)],
    // Not `instanceof Promise` here: its rejection must be handled all the same.
    [
      'rejects from another realm (vm)',
      () => vm.runInNewContext('Promise.reject(new Error("realm"))') as unknown,
    ],
    [
      'returns a rejecting thenable',
      () => ({ then: (_: unknown, reject: (e: unknown) => void) => reject(1) }),
    ],
  ])('%s: 500 problem+json with Aegis’ headers, logged, and the connection serves on', async (_how, fail) => {
    const { port, logger } = await serve({ '/fail': fail })
    const { raw } = await converse(port, (socket) => void socket.write(HEAD('/fail') + HEAD('/ok', CLOSE)))
    const [failed, next] = parseResponses(raw)
    expect(failed?.status).toBe(500)
    expect(failed?.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(JSON.parse(failed?.body ?? '{}')).toMatchObject({ status: 500, code: 'AEGIS_ERR_INTERNAL' })
    expect(failed?.headers['x-content-type-options']).toBe('nosniff')
    expect(next).toMatchObject({ status: 200, body: 'ok' })
    // The app's error, each time, as the app's: not reported as a bug of Aegis.
    expect(logger.errors.map((e) => e.msg)).toEqual(['request handler failed'])
    expect(uncaught).toEqual([])
  })

  it('drops the fields the app set before failing: none of them belong on the 500', async () => {
    const { port } = await serve({
      '/fail': (_req, res) => {
        res.setHeader('set-cookie', 'sid=half-done-login')
        res.setHeader('content-encoding', 'gzip')
        res.setHeader('content-length', '3')
        throw new Error('boom')
      },
    })
    const res = await rawRequest(port, HEAD('/fail'))
    expect(res.status).toBe(500)
    expect(res.headers['set-cookie']).toBeUndefined()
    expect(res.headers['content-encoding']).toBeUndefined()
    expect(Number(res.headers['content-length'])).toBe(res.body.length)
    expect(JSON.parse(res.body)).toMatchObject({ code: 'AEGIS_ERR_INTERNAL' })
    expect(res.headers['x-frame-options']).toBe('DENY')
  })

  it('is not counted as a rejection of Aegis', async () => {
    const { port, core } = await serve({
      '/fail': () => {
        throw new Error('boom')
      },
    })
    expect((await rawRequest(port, HEAD('/fail'))).status).toBe(500)
    const scraped = await core.scrapeMetrics()
    expect(scraped?.body).toMatch(/aegis_http_requests_total\{[^}]*status_class="5xx"\} 1/)
    expect(scraped?.body).not.toMatch(/aegis_rejections_total\{reason="(internal|app)"\}/)
  })

  it('touches its response from a timer after failing: ignored, nothing thrown', async () => {
    const { port } = await serve({
      '/fail': (_req, res) => {
        setTimeout(() => {
          res.setHeader('x-late', '1')
          res.writeHead(200)
          res.write('late')
          res.end()
        }, 30)
        return Promise.reject(new Error('boom'))
      },
    })
    // Keep-alive: the response object lives on while the connection stays open.
    const { raw } = await converse(port, async (socket) => {
      socket.write(HEAD('/fail'))
      await sleep(100)
      socket.write(HEAD('/ok', CLOSE))
    })
    expect(parseResponses(raw).map((r) => [r.status, r.headers['x-late']])).toEqual([
      [500, undefined],
      [200, undefined],
    ])
    expect(uncaught).toEqual([])
  })
})

describe('node:http handler: an app that fails after answering', () => {
  it('finished its answer, then rejected: the answer arrives whole, and the pipelined one behind it', async () => {
    const big = 8 * 1024 * 1024
    const { port, logger } = await serve({
      '/done': (_req, res) => {
        res.end(Buffer.alloc(big, 97))
        return Promise.reject(new Error('after the answer'))
      },
    })
    const { raw } = await converse(port, (socket) => void socket.write(HEAD('/done') + HEAD('/ok', CLOSE)), {
      timeoutMs: 10_000,
    })
    const [done, next] = parseResponses(raw)
    expect(done?.status).toBe(200)
    expect(done?.body.length).toBe(big)
    expect(next).toMatchObject({ status: 200, body: 'ok' })
    expect(logger.errors.map((e) => e.msg)).toEqual(['request handler failed'])
  })

  it.each<[string, App]>([
    [
      'throws',
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('partial')
        throw new Error('mid-answer')
      },
    ],
    [
      'rejects',
      async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('partial')
        await sleep(10)
        throw new Error('mid-answer')
      },
    ],
  ])(
    'started its answer, then %s, pipelined behind a slow one: the slow answer arrives, then the connection closes (no hang)',
    async (_how, fail) => {
      const { port } = await serve({ '/partial': fail })
      // The cut answer is never taken for a whole one, nor is any answer given to the wrong request.
      await expectCutBehindSlow(port, '/partial')
      expect(uncaught).toEqual([])
    },
  )
})

describe('node:http handler: Aegis answers in the app’s place', () => {
  it('a body past its limit: 413, and the app’s failed read is not reported as its failure', async () => {
    const { port, logger } = await serve(
      {
        '/upload': async (req, res) => {
          let n = 0
          for await (const chunk of req) n += (chunk as Buffer).length
          res.end(String(n))
        },
      },
      { validator: { maxBodyBytes: 1024 } },
    )
    const { raw } = await converse(port, async (socket) => {
      socket.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
      await writeChunked(socket, 64 * 1024, 4096)
    })
    const [res] = parseResponses(raw)
    expect(res?.status).toBe(413)
    expect(JSON.parse(res?.body ?? '{}')).toMatchObject({ code: 'AEGIS_ERR_BODY_TOO_LARGE' })
    await sleep(50)
    expect(logger.errors).toEqual([])
    expect(uncaught).toEqual([])
  })

  it('without an app: its endpoints, and a 404 problem for everything else', async () => {
    core = createAegis({ metrics: { path: '/metrics' } })
    const server = createServer(core.handler())
    core.attach(server)
    const port = await listen(server)
    const missing = await rawRequest(port, HEAD('/anything'))
    expect(missing.status).toBe(404)
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(JSON.parse(missing.body)).toMatchObject({ status: 404, code: 'AEGIS_ERR_NOT_FOUND' })
    expect(missing.headers['x-content-type-options']).toBe('nosniff')
    const metrics = await rawRequest(port, HEAD('/metrics'))
    expect(metrics.status).toBe(200)
    expect(metrics.body).toMatch(/aegis_http_requests_total/)
  })

  it('malformed and refused requests never reach the app', async () => {
    let reached = 0
    const { port } = await serve({ '/': () => void reached++ })
    for (const bytes of [
      '\x00\x01\x02\r\n\r\n',
      'GET / HTTP/9.9\r\nHost: x\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX: \x7f\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
      'GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
      'TRACE / HTTP/1.1\r\nHost: x\r\n\r\n',
    ]) {
      const res = await rawRequest(port, bytes)
      expect(res.status, JSON.stringify(bytes)).toBeGreaterThanOrEqual(400)
      expect(res.status).toBeLessThan(500)
    }
    expect(reached).toBe(0)
    expect((await rawRequest(port, HEAD('/ok'))).status).toBe(200)
  })
})
