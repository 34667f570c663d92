/**
 * The same app on Express, Fastify, Koa and plain `node:http`, each protected by
 * its Aegis adapter, listening on 127.0.0.1. The conformance suite runs every
 * scenario against all four.
 */
import { once } from 'node:events'
import { createServer, type RequestListener, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import Router from '@koa/router'
import { bodyParser } from '@koa/bodyparser'
import { z } from 'zod'
import { createAegis, type Aegis, type AegisOptions } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'
import { createRouter, sendJson, sendText } from '../helpers/node-router.js'

export interface TestApp {
  readonly name: 'express' | 'fastify' | 'koa' | 'node'
  readonly url: string
  readonly port: number
  readonly core: Aegis
  readonly server: Server
  close(): Promise<void>
}

export const nameSchema = {
  body: z.strictObject({ name: z.string().min(1), age: z.coerce.number().int().optional() }),
}
export const itemQuerySchema = { query: z.object({ limit: z.coerce.number().int().max(100) }) }

/** How long `GET /slow?id=N` takes to answer `slow N`. */
export const SLOW_MS = 150

export const listen = async (server: Server): Promise<number> => {
  if (!server.listening) {
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
  }
  return (server.address() as AddressInfo).port
}

/** Read a request stream fully, counting bytes (the "upload" route). */
export const countBody = async (stream: AsyncIterable<Buffer>): Promise<number> => {
  let n = 0
  for await (const chunk of stream) n += chunk.length
  return n
}

export async function expressApp(options: AegisOptions = {}): Promise<TestApp> {
  const app = express()
  const shield = expressAegis({ metrics: { path: '/metrics' }, ...options })
  app.use(shield)
  app.get('/', (_req, res) => res.json({ ok: true }))
  app.post('/login', (_req, res) => res.json({ ok: true }))
  // A failed login costs 3 more points.
  app.post('/login/fail', (req, res, next) => {
    shield.limiter?.penalty(req, 3).then(() => res.status(401).json({ ok: false }), next)
  })
  app.get('/health', (_req, res) => res.send('ok'))
  // Answers from a timer, outside the framework's error handling (a throw there is uncaught).
  app.get('/slow', (req, res) => void setTimeout(() => res.send(`slow ${req.query.id as string}`), SLOW_MS))
  // The host the app believes it serves (password-reset links are built from it).
  app.get('/host', (req, res) => res.json({ host: req.host }))
  app.get('/users/:id', (req, res) => res.json({ id: req.params.id, client: req.aegis?.client.ip }))
  app.get('/boom', () => {
    throw new Error('boom')
  })
  app.post('/upload', (req, res, next) => {
    countBody(req).then((bytes) => res.json({ bytes }), next)
  })
  app.post('/people', express.json(), shield.validate(nameSchema), (req, res) =>
    res.status(201).json(req.body),
  )
  app.get('/items', shield.validate(itemQuerySchema), (req, res) => res.json(req.aegis?.input?.query))
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  const port = await listen(server)
  return {
    name: 'express',
    url: `http://127.0.0.1:${port}`,
    port,
    core: shield.core,
    server,
    close: async () => {
      await shield.close()
    },
  }
}

export async function fastifyApp(options: AegisOptions = {}): Promise<TestApp> {
  const app = Fastify({ requestTimeout: 30_000 })
  await app.register(fastifyAegis, { metrics: { path: '/metrics' }, ...options })
  app.get('/', () => ({ ok: true }))
  app.post('/login', () => ({ ok: true }))
  app.post('/login/fail', async (request, reply) => {
    await app.aegis.limiter?.penalty(request, 3)
    return reply.code(401).send({ ok: false })
  })
  app.get<{ Params: { id: string } }>('/users/:id', (req) => ({
    id: req.params.id,
    client: req.aegis?.client.ip,
  }))
  app.get('/health', { config: { aegis: false } }, () => 'ok')
  app.get<{ Querystring: { id?: string } }>(
    '/slow',
    (req, reply) => void setTimeout(() => void reply.send(`slow ${String(req.query.id)}`), SLOW_MS),
  )
  app.get('/host', (req) => ({ host: req.host }))
  app.get('/boom', () => {
    throw new Error('boom')
  })
  // Count the raw stream ourselves: no body parser for this content type.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => {
    countBody(payload).then((bytes) => done(null, bytes), done)
  })
  app.post('/upload', (req) => ({ bytes: req.body }))
  app.post('/people', { preValidation: app.aegis.validate(nameSchema) }, async (req, reply) =>
    reply.code(201).send(req.body),
  )
  app.get('/items', { preValidation: app.aegis.validate(itemQuerySchema) }, (req) => req.aegis?.input?.query)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  return {
    name: 'fastify',
    url: `http://127.0.0.1:${port}`,
    port,
    core: app.aegis,
    server: app.server,
    close: () => app.close(),
  }
}

export async function koaApp(options: AegisOptions = {}): Promise<TestApp> {
  const app = new Koa()
  app.silent = true
  const shield = koaAegis({ metrics: { path: '/metrics' }, ...options })
  const router = new Router()
  app.use(shield)
  router.get('/', (ctx) => {
    ctx.body = { ok: true }
  })
  router.post('/login', (ctx) => {
    ctx.body = { ok: true }
  })
  router.post('/login/fail', async (ctx) => {
    await shield.limiter?.penalty(ctx.req, 3)
    ctx.status = 401
    ctx.body = { ok: false }
  })
  router.get('/health', (ctx) => {
    ctx.body = 'ok'
  })
  router.get('/slow', async (ctx) => {
    await new Promise((resolve) => setTimeout(resolve, SLOW_MS))
    ctx.body = `slow ${String(ctx.query.id)}`
  })
  router.get('/host', (ctx) => {
    ctx.body = { host: ctx.host }
  })
  router.get('/users/:id', (ctx) => {
    ctx.body = { id: ctx.params.id, client: ctx.state.aegis?.client.ip }
  })
  router.get('/boom', () => {
    throw new Error('boom')
  })
  router.post('/upload', async (ctx) => {
    ctx.body = { bytes: await countBody(ctx.req) }
  })
  router.post('/people', bodyParser(), shield.validate(nameSchema), (ctx) => {
    ctx.status = 201
    ctx.body = ctx.request.body
  })
  router.get('/items', shield.validate(itemQuerySchema), (ctx) => {
    ctx.body = ctx.state.aegis?.input?.query
  })
  app.use(router.routes())
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  const port = await listen(server)
  return {
    name: 'koa',
    url: `http://127.0.0.1:${port}`,
    port,
    core: shield.core,
    server,
    close: async () => {
      await shield.close()
    },
  }
}

/** Read a request body whole. */
const readBody = async (stream: AsyncIterable<Buffer>): Promise<Buffer> => {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk)
  return Buffer.concat(chunks)
}

/** Write a rejection as it is (status, its fields, its problem+json body). */
const sendRejection = (res: ServerResponse, r: { status: number; headers: object; body: string }): void => {
  res.writeHead(r.status, r.headers as Record<string, string>)
  res.end(r.body)
}

/** The same app with no framework: a hand-written router behind `core.handler(app)`. */
export async function nodeApp(options: AegisOptions = {}): Promise<TestApp> {
  const core = createAegis({ metrics: { path: '/metrics' }, ...options })
  const router = createRouter({
    // The matched pattern is the route template metrics and the access log report.
    onMatch: (req, route) => {
      const state = core.stateOf(req)
      if (state !== undefined) state.route = route
    },
  })
  const checkPerson = core.routeValidator(nameSchema)
  const checkItems = core.routeValidator(itemQuerySchema)
  router.add('GET', '/', (_req, res) => sendJson(res, 200, { ok: true }))
  router.add('POST', '/login', (_req, res) => sendJson(res, 200, { ok: true }))
  // A failed login costs 3 more points.
  router.add('POST', '/login/fail', async (req, res) => {
    await core.limiter?.penalty(req, 3)
    sendJson(res, 401, { ok: false })
  })
  router.add('GET', '/health', (_req, res) => sendText(res, 200, 'ok'))
  // Answers from a timer, outside the handler's reach (a throw there is uncaught).
  router.add('GET', '/slow', (_req, res, { query }) => {
    setTimeout(() => sendText(res, 200, `slow ${String(query.get('id'))}`), SLOW_MS)
  })
  // The host the app believes it serves (password-reset links are built from it).
  router.add('GET', '/host', (req, res) => sendJson(res, 200, { host: req.headers.host }))
  router.add('GET', '/users/:id', (req, res, { params }) =>
    sendJson(res, 200, { id: params.id, client: core.stateOf(req)?.client.ip }),
  )
  router.add('GET', '/boom', () => {
    throw new Error('boom')
  })
  // A rejected promise out of the app: the handler answers it (a body past its limit rejects the read).
  router.add('POST', '/upload', async (req, res) => sendJson(res, 200, { bytes: await countBody(req) }))
  router.add('POST', '/people', async (req, res) => {
    const raw = await readBody(req)
    let body: unknown
    if (req.headers['content-type']?.startsWith('application/json') === true)
      try {
        body = JSON.parse(raw.toString('utf8'))
      } catch {
        return sendJson(res, 400, { error: 'invalid JSON' })
      }
    const result = checkPerson({ body })
    if (!result.ok) {
      core.countRejection(result.rejection)
      return sendRejection(res, result.rejection)
    }
    sendJson(res, 201, result.value.body)
  })
  router.add('GET', '/items', (req, res, { query }) => {
    const result = checkItems({ query: Object.fromEntries(query) })
    if (!result.ok) {
      core.countRejection(result.rejection)
      return sendRejection(res, result.rejection)
    }
    const state = core.stateOf(req)
    if (state !== undefined) state.input = result.value
    sendJson(res, 200, result.value.query)
  })
  return nodeServed(core, router.listener)
}

/** A plain node:http server with Aegis in front of `app` (`core.handler(app)`), attached and listening. */
export async function nodeServed(core: Aegis, app: RequestListener): Promise<TestApp> {
  const server = createServer(core.handler(app))
  core.attach(server)
  const port = await listen(server)
  return { name: 'node', url: `http://127.0.0.1:${port}`, port, core, server, close: () => core.close() }
}

export const adapters = [
  ['express', expressApp],
  ['fastify', fastifyApp],
  ['koa', koaApp],
  ['node', nodeApp],
] as const
