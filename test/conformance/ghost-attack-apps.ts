/**
 * Apps for the ghost cache's attack tests (ghost-attacks.test.ts), one per adapter:
 * `rawApps` hand the request's own Node response to a handler (Express and the plain
 * listener as they come, Koa with `ctx.respond = false`, Fastify with `reply.hijack()`);
 * `throwingApps` answer `GET /boom` by writing part of a 500 and then failing the
 * framework's way (Express `next(err)`, Koa and Fastify a throw, the listener a throw),
 * and `GET /ok` with `ok`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import { createAegis, type Aegis, type AegisOptions } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'
import { listen } from './apps.js'

export type RawHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface AttackApp {
  readonly port: number
  readonly core: Aegis
  readonly server: Server
  close(): Promise<void>
}

type Factory = (options: AegisOptions, handler: RawHandler) => Promise<AttackApp>

const expressRaw: Factory = async (options, handler) => {
  const app = express()
  const shield = expressAegis(options)
  app.use(shield)
  app.use((req, res) => handler(req, res))
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), core: shield.core, server, close: () => shield.close() }
}

const koaRaw: Factory = async (options, handler) => {
  const app = new Koa()
  app.silent = true
  const shield = koaAegis(options)
  app.use(shield)
  app.use((ctx) => {
    ctx.respond = false
    handler(ctx.req, ctx.res)
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), core: shield.core, server, close: () => shield.close() }
}

const fastifyRaw: Factory = async (options, handler) => {
  const app = Fastify()
  await app.register(fastifyAegis, options)
  app.all('/*', (req, reply) => {
    reply.hijack()
    handler(req.raw, reply.raw)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    port: (app.server.address() as AddressInfo).port,
    core: app.aegis,
    server: app.server,
    close: () => app.close(),
  }
}

const nodeRaw: Factory = async (options, handler) => {
  const core = createAegis(options)
  const server = createServer(core.handler(handler))
  core.attach(server)
  return { port: await listen(server), core, server, close: () => core.close() }
}

export const rawApps = [
  ['express', expressRaw],
  ['fastify', fastifyRaw],
  ['koa', koaRaw],
  ['node', nodeRaw],
] as const

/** What `/boom` writes before it fails: a 500 head announcing 5 bytes, and 3 of them. */
const partial = (res: ServerResponse): void => {
  res.writeHead(500, { 'content-type': 'text/plain', 'content-length': '5' })
  res.write('abc')
}

const expressThrowing = async (options: AegisOptions): Promise<AttackApp> => {
  const app = express()
  const shield = expressAegis(options)
  app.use(shield)
  app.get('/boom', (_req, res, next) => {
    partial(res)
    next(new Error('handler broke'))
  })
  app.get('/ok', (_req, res) => void res.send('ok'))
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), core: shield.core, server, close: () => shield.close() }
}

const koaThrowing = async (options: AegisOptions): Promise<AttackApp> => {
  const app = new Koa()
  app.silent = true
  const shield = koaAegis(options)
  app.use(shield)
  app.use((ctx) => {
    if (ctx.path === '/ok') return void (ctx.body = 'ok')
    partial(ctx.res)
    throw new Error('handler broke')
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), core: shield.core, server, close: () => shield.close() }
}

const fastifyThrowing = async (options: AegisOptions): Promise<AttackApp> => {
  const app = Fastify()
  await app.register(fastifyAegis, options)
  app.get('/boom', async (_req, reply) => {
    partial(reply.raw)
    throw new Error('handler broke')
  })
  app.get('/ok', (_req, reply) => reply.send('ok'))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    port: (app.server.address() as AddressInfo).port,
    core: app.aegis,
    server: app.server,
    close: () => app.close(),
  }
}

const nodeThrowing = (options: AegisOptions): Promise<AttackApp> =>
  nodeRaw(options, (req, res) => {
    if (req.url === '/ok') return void res.end('ok')
    partial(res)
    throw new Error('handler broke')
  })

export const throwingApps = [
  ['express', expressThrowing],
  ['fastify', fastifyThrowing],
  ['koa', koaThrowing],
  ['node', nodeThrowing],
] as const
