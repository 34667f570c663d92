import { once } from 'node:events'
import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis } from '../src/index.js'
import { shapeRequests } from '../src/node/shape.js'

// What a framework of the Express kind does to each request: a prototype of
// its own (with a getter and a default of its own), then properties added.
const requestProto = Object.create(IncomingMessage.prototype, {
  query: { get: () => 'parsed', configurable: true, enumerable: true },
  mode: { value: 'framework', writable: true, configurable: true },
}) as object
const responseProto = Object.create(ServerResponse.prototype) as object

type Handler = (
  req: IncomingMessage & Record<PropertyKey, unknown>,
  res: ServerResponse & Record<PropertyKey, unknown>,
) => void

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))))
})

async function serve(handler: Handler): Promise<{ server: Server; get: (path?: string) => Promise<string> }> {
  const server = createServer((req, res) => {
    Object.setPrototypeOf(req, requestProto)
    Object.setPrototypeOf(res, responseProto)
    handler(req as Parameters<Handler>[0], res as Parameters<Handler>[1])
  })
  servers.push(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { server, get: async (path = '/') => (await fetch(base + path)).text() }
}

/** What each request looks like to the first listener after the shaping one. */
function watch(server: Server): { seen: Array<Record<string, unknown>> } {
  const seen: Array<Record<string, unknown>> = []
  const listeners = server.listeners('request') as Array<(...a: unknown[]) => void>
  server.removeAllListeners('request')
  // Shaping is first; this sees the objects right after it, before the handler.
  server.on('request', listeners[0] as (...a: unknown[]) => void)
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    seen.push({
      next: Object.hasOwn(req, 'next')
        ? { own: true, value: (req as unknown as Record<string, unknown>).next }
        : 'absent',
      query: Object.hasOwn(req, 'query'),
      hidden: Object.hasOwn(req, 'hidden'),
      getter: Object.hasOwn(req, 'computed'),
      mode: Object.hasOwn(req, 'mode'),
      statusCode: Object.hasOwn(res, 'statusCode') ? res.statusCode : 'absent',
      locals: Object.hasOwn(res, 'locals'),
    })
  })
  for (const l of listeners.slice(1)) server.on('request', l)
  return { seen }
}

describe('shapeRequests', () => {
  it('adds what the first responses gained, up front, holding what reading it gives anyway', async () => {
    const { server, get } = await serve((req, res) => {
      req.next = () => undefined
      req.baseUrl = ''
      res.locals = { user: req.url }
      res.statusCode = req.url === '/missing' ? 404 : 200
      res.end(`${String(req.query)} ${(res.locals as { user: string }).user}`)
    })
    const shape = shapeRequests(server, { learnFrom: 2 })
    const { seen } = watch(server)
    expect(await get('/a')).toBe('parsed /a')
    expect(await get('/missing')).toBe('parsed /missing')
    // In the order added (Node itself adds one or two of its own, such as `_eventsCount`).
    expect(shape.request.filter((k) => k === 'next' || k === 'baseUrl')).toEqual(['next', 'baseUrl'])
    // Node keeps statusCode on ServerResponse.prototype: once set, it is an own property too.
    expect(shape.response.slice(0, 3)).toEqual(['locals', 'statusCode', 'statusMessage'])
    expect(await get('/b')).toBe('parsed /b')
    // The second request may arrive before the first one's response has closed: not asserted.
    expect([seen[0], seen[2]].map((s) => [s?.next, s?.statusCode, s?.locals])).toEqual([
      ['absent', 'absent', false],
      [{ own: true, value: undefined }, 200, true],
    ])
  })

  it('never shadows a getter or a prototype value that differs, and skips accessors and hidden fields', async () => {
    const { server, get } = await serve((req, res) => {
      // An own `query` over the framework's getter (Aegis' validate() does this).
      Object.defineProperty(req, 'query', {
        value: 'validated',
        writable: true,
        enumerable: true,
        configurable: true,
      })
      // The framework's prototype says 'framework' where Node's chain says nothing: not the same read.
      req.mode = 'request'
      Object.defineProperty(req, 'hidden', {
        value: 1,
        writable: true,
        enumerable: false,
        configurable: true,
      })
      Object.defineProperty(req, 'computed', { get: () => 2, enumerable: true, configurable: true })
      res.end(String(req.query))
    })
    const shape = shapeRequests(server, { learnFrom: 3 })
    const { seen } = watch(server)
    for (let i = 0; i < 4; i++) expect(await get()).toBe('validated')
    for (const key of ['query', 'mode', 'hidden', 'computed']) expect(shape.request).not.toContain(key)
    expect(seen.at(-1)).toMatchObject({ query: false, hidden: false, getter: false, mode: false })
  })

  it('keeps the value a listener before it already set', async () => {
    const { server, get } = await serve((req, res) => {
      req.baseUrl ??= 'default'
      res.end(String(req.baseUrl))
    })
    shapeRequests(server, { learnFrom: 1 })
    expect(await get()).toBe('default')
    server.prependListener('request', (req: IncomingMessage & { baseUrl?: string }) => {
      req.baseUrl = 'acme'
    })
    expect(await get()).toBe('acme')
  })

  it('learns from the first responses only, and at most maxKeys properties', async () => {
    let n = 0
    const { server, get } = await serve((req, res) => {
      n++
      for (let i = 0; i < 10; i++) req[Symbol(`k${n}_${i}`)] = i
      res.end('ok')
    })
    const shape = shapeRequests(server, { learnFrom: 2, maxKeys: 15 })
    for (let i = 0; i < 4; i++) await get()
    expect(shape.request).toHaveLength(15)
    const names = shape.request.map((k) => (typeof k === 'symbol' ? (k.description ?? '') : String(k)))
    expect(names.filter((k) => /^k[12]_/.test(k)).length).toBeGreaterThanOrEqual(13)
    expect(names.some((k) => /^k[34]_/.test(k))).toBe(false)
  })

  it("never adds the application's own properties, which code tests with `in`", async () => {
    const { server, get } = await serve((req, res) => {
      if (req.url === '/login') req.user = { id: 1 }
      res.end('user' in req ? 'known' : 'anonymous')
    })
    const shape = shapeRequests(server, { learnFrom: 4 })
    expect(await get('/login')).toBe('known')
    for (let i = 0; i < 5; i++) expect(await get('/')).toBe('anonymous')
    expect(shape.request).not.toContain('user')
  })

  it('stops shaping, without failing the request, when a learned name turns into a getter', async () => {
    const { server, get } = await serve((req, res) => {
      if (req.url === '/learn') req.baseUrl = ''
      res.end(String(req.baseUrl))
    })
    const shape = shapeRequests(server, { learnFrom: 1 })
    expect(await get('/learn')).toBe('')
    expect(shape.request).toContain('baseUrl')
    const listeners = server.listenerCount('request')
    // Instrumentation adds a getter without a setter for it on Node's own prototype.
    Object.defineProperty(IncomingMessage.prototype, 'baseUrl', { get: () => '/x', configurable: true })
    try {
      expect(await get('/')).toBe('/x')
      expect(server.listenerCount('request')).toBe(listeners - 1)
    } finally {
      delete (IncomingMessage.prototype as { baseUrl?: unknown }).baseUrl
    }
  })

  it('stop() removes the listener', async () => {
    const { server, get } = await serve((_req, res) => res.end('ok'))
    const before = server.listenerCount('request')
    const shape = shapeRequests(server)
    expect(server.listenerCount('request')).toBe(before + 1)
    shape.stop()
    expect(server.listenerCount('request')).toBe(before)
    expect(await get()).toBe('ok')
  })
})

describe('createAegis hooks.shapeServers (an app that never calls attach())', () => {
  /** A server whose handler admits every request through `core`, the way an adapter does. */
  const admitting = (core: Aegis) =>
    serve((req, res) => {
      void Promise.resolve(core.admit(req)).then(() => {
        // What an Express handler leaves on the objects: learned from the first responses.
        req.next = undefined
        res.locals = {}
        res.end(String(Object.hasOwn(req, 'next')))
      })
    })

  it('shapes the server a request arrives from, from that request on, until close()', async () => {
    const core = createAegis({ limiter: false }, { shapeServers: true })
    const { server, get } = await admitting(core)
    const listeners = server.listenerCount('request')
    // The first request is not shaped: `next` is absent until the handler sets it, then own.
    expect(await get()).toBe('true')
    expect(server.listenerCount('request')).toBe(listeners + 1)
    const seen = watch(server).seen
    const watching = server.listenerCount('request')
    for (let i = 0; i < 20; i++) await get()
    // Past the 16 it learns from, `next` is there before the handler runs, holding `undefined`.
    expect(seen.at(-1)?.next).toEqual({ own: true, value: undefined })
    expect(seen.at(-1)?.locals).toBe(true)
    await core.close()
    // Only the shaping listener goes (watch() added one of its own).
    expect(server.listenerCount('request')).toBe(watching - 1)
  })

  it('is off unless an adapter asks for it, and attach() says for the servers it attaches', async () => {
    const plain = createAegis({ limiter: false })
    const first = await admitting(plain)
    const listeners = first.server.listenerCount('request')
    await first.get()
    expect(first.server.listenerCount('request')).toBe(listeners)
    await plain.close()

    const core = createAegis({ limiter: false }, { shapeServers: true })
    const attached = await admitting(core)
    core.attach(attached.server, { drain: false, shapeRequests: false })
    await attached.get()
    expect(attached.server.listenerCount('request')).toBe(listeners)
    await core.close()
    // After close(), a request no longer starts any shaping.
    const late = await admitting(core)
    await late.get()
    expect(late.server.listenerCount('request')).toBe(listeners)
  })
})
