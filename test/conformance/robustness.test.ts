/**
 * What outside testing found could take a host process down, on all three
 * adapters over real sockets: a body outgrowing its limit on a route that never
 * reads it, or pipelined behind a slow answer (the 413 must reach its own request,
 * in order, and nothing may race the framework's own write); user callbacks that
 * throw or reject on a request, an upgrade or a metrics scrape (a 500 problem,
 * logged once, never an uncaught exception).
 */
import { Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AegisOptions } from '@aegis/core'
import {
  converse,
  parseResponses,
  rawRequest,
  writeChunked,
  type ParsedResponse,
} from '../helpers/raw-http.js'
import { failOnUncaught } from '../helpers/uncaught.js'
import { recorder } from '../helpers/recorder.js'
import { startWsUpstream, type WsUpstream } from '../helpers/ws-upstream.js'
import { adapters, type TestApp } from './apps.js'
import { gateways } from './gateway-apps.js'

failOnUncaught()

// One WebSocket upstream for the upgrade tests: it greets every socket it accepts.
let ws: WsUpstream
beforeAll(async () => {
  ws = await startWsUpstream((socket) => socket.send('hello'))
})
afterAll(() => ws.close())
const UPGRADE =
  'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'

const HEAD = (method: string, path: string, extra = ''): string =>
  `${method} ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`
const CHUNKED = 'Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n'
const OVER_LIMIT = 2 * 1024 * 1024 // the default maxBodyBytes is 1 MiB

/**
 * The answer to an oversized body on a route that never reads it: a 413, or — on Koa
 * and plain node:http, which answer a 404 at once without waiting for the body — that
 * 404 (Node then discards the rest of the body unread). Either way one answer, its own.
 */
const expectOversizedAnswer = (app: TestApp, res: ParsedResponse | undefined): void => {
  if (app.name === 'koa' || app.name === 'node') return void expect(res?.status).toBe(404)
  expectProblem(res, 413, 'AEGIS_ERR_BODY_TOO_LARGE')
  expect(res?.headers.connection).toBe('close')
}

const expectProblem = (res: ParsedResponse | undefined, status: number, code: string): void => {
  expect(res?.status).toBe(status)
  expect(res?.headers['content-type']).toMatch(/^application\/problem\+json/)
  expect(JSON.parse(res?.body ?? '{}')).toMatchObject({ status, code })
}

describe.each(adapters)('%s: a body past its limit', (_name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make()
  })
  afterAll(() => app.close())

  it('sent to a route that never reads it (a 404): 413 on that request, and the process lives', async () => {
    const { raw } = await converse(
      app.port,
      async (socket) => {
        socket.write(HEAD('POST', '/nowhere', CHUNKED))
        await writeChunked(socket, OVER_LIMIT)
      },
      { timeoutMs: 2000 },
    )
    const responses = parseResponses(raw)
    expect(responses).toHaveLength(1)
    expectOversizedAnswer(app, responses[0])
    // Whatever the framework would have answered later is not written anywhere, and nothing throws.
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect((await fetch(`${app.url}/`)).status).toBe(200)
  })

  it('pipelined behind a slow request: each answer on its own request, in order', async () => {
    const { raw } = await converse(app.port, async (socket) => {
      socket.write(HEAD('GET', '/slow?id=1') + HEAD('POST', '/nowhere', CHUNKED))
      await writeChunked(socket, OVER_LIMIT)
    })
    const responses = parseResponses(raw)
    expect(responses).toHaveLength(2)
    expect(responses[0]?.status).toBe(200)
    expect(responses[0]?.body).toBe('slow 1')
    expectOversizedAnswer(app, responses[1])
    // The slow handler answered late, from its timer, on a response already written: no throw.
    await new Promise((resolve) => setTimeout(resolve, 300))
  })

  it('pipelined behind a slow request, to a route that answers without reading: both answers arrive', async () => {
    const { raw } = await converse(app.port, async (socket) => {
      socket.write(HEAD('GET', '/slow?id=1') + HEAD('POST', '/login', CHUNKED))
      await writeChunked(socket, OVER_LIMIT)
    })
    const responses = parseResponses(raw)
    expect(responses).toHaveLength(2)
    expect(responses[0]?.body).toBe('slow 1')
    // Fastify reads a body before its handler runs: there the limit answers.
    if (app.name === 'fastify') expectProblem(responses[1], 413, 'AEGIS_ERR_BODY_TOO_LARGE')
    else expect(responses[1]).toMatchObject({ status: 200, body: JSON.stringify({ ok: true }) })
  })

  it('read by the app, after a keep-alive request on the same connection: 413, the second answer', async () => {
    const { raw } = await converse(app.port, async (socket) => {
      socket.write(HEAD('GET', '/health'))
      await new Promise((resolve) => setTimeout(resolve, 50))
      socket.write(HEAD('POST', '/upload', CHUNKED))
      await writeChunked(socket, OVER_LIMIT)
    })
    const responses = parseResponses(raw)
    expect(responses.map((r) => r.status)).toEqual([200, 413])
  })

  it('keeps pipelined answers in order when every body is within its limit', async () => {
    const { raw } = await converse(app.port, async (socket) => {
      socket.write(HEAD('GET', '/slow?id=1') + HEAD('POST', '/upload', CHUNKED))
      await writeChunked(socket, 10 * 1024, 1024)
      socket.write(HEAD('GET', '/slow?id=3', 'Connection: close\r\n'))
    })
    const responses = parseResponses(raw)
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200])
    expect(responses[0]?.body).toBe('slow 1')
    expect(JSON.parse(responses[1]?.body ?? '{}')).toEqual({ bytes: 10 * 1024 })
    expect(responses[2]?.body).toBe('slow 3')
  })
})

/** Options whose one callback throws (or rejects) on requests carrying `x-boom`, and the request that calls it. */
const boom = (req: { headers: Record<string, unknown> }): boolean => req.headers['x-boom'] !== undefined
const failure = (how: string): Error => new Error(`${how}: malformed token`)
const callbacks: [name: string, options: AegisOptions, request: { method: string; headers: string }][] = [
  [
    'limiter.key',
    {
      limiter: {
        key: (req) => {
          if (boom(req)) throw failure('key')
          return undefined
        },
      },
    },
    { method: 'GET', headers: 'x-boom: 1\r\n' },
  ],
  [
    'limiter.cost',
    {
      limiter: {
        cost: (req) => {
          if (boom(req)) throw failure('cost')
          return 1
        },
      },
    },
    { method: 'GET', headers: 'x-boom: 1\r\n' },
  ],
  [
    'limiter.key (rejecting)',
    {
      // An async key() where a synchronous one is expected: refused, and its rejection handled.
      limiter: {
        key: ((req: { headers: Record<string, unknown> }) =>
          boom(req) ? Promise.reject(failure('async key')) : undefined) as never,
      },
    },
    { method: 'GET', headers: 'x-boom: 1\r\n' },
  ],
  [
    'skip',
    {
      skip: (req) => {
        if (boom(req)) throw failure('skip')
        return false
      },
    },
    { method: 'GET', headers: 'x-boom: 1\r\n' },
  ],
  [
    'cors.origin',
    {
      cors: {
        origin: (origin) => {
          if (origin === 'null') throw failure('origin')
          return origin === 'https://app.example'
        },
      },
    },
    { method: 'GET', headers: 'Origin: null\r\n' },
  ],
  [
    'onReject',
    {
      onReject: () => {
        throw failure('onReject')
      },
    },
    // TRACE is refused (405): the hook runs on every refusal.
    { method: 'TRACE', headers: '' },
  ],
]

describe.each(adapters)('%s: a user callback that throws on a request', (_name, make) => {
  it.each(callbacks)('%s: 500 problem+json, logged once with its code', async (name, options, request) => {
    const logger = recorder()
    const app = await make({ ...options, logger })
    try {
      for (let i = 0; i < 2; i++) {
        const res = await rawRequest(app.port, HEAD(request.method, '/', request.headers))
        expectProblem(res, 500, 'AEGIS_ERR_CALLBACK_FAILED')
      }
      const failures = logger.errors.filter((e) => e.obj.code === 'AEGIS_ERR_CALLBACK_FAILED')
      expect(failures).toHaveLength(1)
      expect(failures[0]?.obj.callback).toBe(name.replace(' (rejecting)', ''))
      // The same callback on an ordinary request: served as ever.
      expect((await rawRequest(app.port, HEAD('GET', '/'))).status).toBe(200)
    } finally {
      await app.close()
    }
  })
})

describe('a user callback that throws during a WebSocket upgrade', () => {
  describe.each(gateways)('%s', (_name, make) => {
    it.each(callbacks.filter(([, , r]) => r.method === 'GET'))(
      '%s: the upgrade is answered 500 problem+json on its socket',
      async (_callback, options, request) => {
        const app = await make([{ prefix: '/ws', upstreams: [ws.url] }], {
          ...options,
          logger: recorder(),
        })
        try {
          const res = await rawRequest(app.port, HEAD('GET', '/ws/chat', UPGRADE + request.headers))
          expectProblem(res, 500, 'AEGIS_ERR_CALLBACK_FAILED')
          // Without the trigger, the same upgrade goes through.
          const ok = await rawRequest(app.port, HEAD('GET', '/ws/chat', UPGRADE))
          expect(ok.status).toBe(101)
        } finally {
          await app.close()
        }
      },
    )
  })
})

describe.each(adapters)('%s: a registry whose collect() throws', (_name, make) => {
  it('answers the scrape 500 problem+json and keeps serving', async () => {
    const registry = new Registry()
    new Gauge({
      name: 'app_flaky',
      help: 'a gauge whose collect() throws',
      registers: [registry],
      collect() {
        throw new Error('collect failed')
      },
    })
    const logger = recorder()
    const app = await make({ metrics: { path: '/metrics', registry }, logger })
    try {
      const res = await rawRequest(app.port, HEAD('GET', '/metrics'))
      expectProblem(res, 500, 'AEGIS_ERR_INTERNAL')
      expect(logger.errors.some((e) => e.msg === 'metrics scrape failed')).toBe(true)
      expect((await rawRequest(app.port, HEAD('GET', '/'))).status).toBe(200)
    } finally {
      await app.close()
    }
  })
})

describe('a gateway route whose user callbacks throw', () => {
  const throwingHash = (req: { headers: Record<string, unknown> }): string => {
    if (boom(req)) throw failure('hash')
    return 'k'
  }

  describe.each(gateways)('%s', (_name, make) => {
    it('router: the request is answered 500 problem+json, logged once', async () => {
      const logger = recorder()
      const app = await make(
        [
          {
            prefix: '/api',
            upstreams: [],
            allowTargets: ['127.0.0.0/8'],
            router: (req) => {
              if (boom(req)) throw failure('router')
              return ws.url
            },
          },
        ],
        { logger },
      )
      try {
        for (let i = 0; i < 2; i++)
          expectProblem(
            await rawRequest(app.port, HEAD('GET', '/api/x', 'x-boom: 1\r\n')),
            500,
            'AEGIS_ERR_CALLBACK_FAILED',
          )
        const failures = logger.errors.filter((e) => e.obj.code === 'AEGIS_ERR_CALLBACK_FAILED')
        expect(failures.map((f) => f.obj.callback)).toEqual(['proxy.router'])
      } finally {
        await app.close()
      }
    })

    it('balancer.hash: 500 problem+json on a request and on a WebSocket upgrade', async () => {
      const app = await make(
        [
          { prefix: '/api', upstreams: [ws.url], balancer: { hash: throwingHash } },
          { prefix: '/ws', upstreams: [ws.url], balancer: { hash: throwingHash } },
        ],
        { logger: recorder() },
      )
      try {
        expectProblem(
          await rawRequest(app.port, HEAD('GET', '/api/x', 'x-boom: 1\r\n')),
          500,
          'AEGIS_ERR_CALLBACK_FAILED',
        )
        const res = await rawRequest(app.port, HEAD('GET', '/ws/chat', UPGRADE + 'x-boom: 1\r\n'))
        expectProblem(res, 500, 'AEGIS_ERR_CALLBACK_FAILED')
        expect((await rawRequest(app.port, HEAD('GET', '/ws/chat', UPGRADE))).status).toBe(101)
      } finally {
        await app.close()
      }
    })

    it('a WebSocket upgrade that reaches a route as a plain request is refused loudly, never a silent 200', async () => {
      const logger = recorder()
      const warnings: unknown[] = []
      logger.warn = (obj) => void warnings.push(obj)
      // The documented Express mount (app.use('/api', shield.proxy(...))) never sees the 'upgrade' event.
      const app = await make([{ prefix: '/api', upstreams: [ws.url] }], { logger })
      try {
        const res = await rawRequest(app.port, HEAD('GET', '/api/chat', UPGRADE))
        if (app.name === 'express') {
          expectProblem(res, 403, 'AEGIS_ERR_UPGRADE_REFUSED')
          expect(warnings).toContainEqual({ code: 'AEGIS_WARN_UPGRADE_UNROUTED' })
        } else expect(res.status).toBe(101) // a prefixed route on an attached server takes it
      } finally {
        await app.close()
      }
    })
  })
})
