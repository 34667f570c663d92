/**
 * One small app on each adapter for the ghost cache's in-app tests: `GET /page`
 * answers JSON (with a counter, so a stand-in is told from a fresh answer) until
 * `fail()` makes it throw or answer `503 app down`; `POST /page` goes the same way.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import { createAegis, type AegisOptions } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'
import { listen } from './apps.js'
import { createServer } from 'node:http'

export type Failure = 'none' | 'throw' | '503'

export interface GhostApp {
  readonly port: number
  readonly server: Server
  /** How `/page` answers from now on. */
  fail(how: Failure): void
  close(): Promise<void>
}

/** The page's behaviour, shared by the four apps: what to answer, or throw. */
function page() {
  let how: Failure = 'none'
  let n = 0
  return {
    set: (f: Failure) => void (how = f),
    /** `[status, body]` to answer; throws when failing that way. */
    answer(): [number, string] {
      if (how === 'throw') throw new Error('handler broke')
      if (how === '503') return [503, 'app down']
      return [200, JSON.stringify({ page: true, n: ++n })]
    },
  }
}

const contentType = (status: number): string => (status === 200 ? 'application/json' : 'text/plain')

async function expressGhost(options: AegisOptions): Promise<GhostApp> {
  const p = page()
  const app = express()
  const shield = expressAegis(options)
  app.use(shield)
  app.all('/page', (_req, res) => {
    const [status, body] = p.answer()
    res.status(status).type(contentType(status)).send(body)
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), server, fail: p.set, close: () => shield.close() }
}

async function fastifyGhost(options: AegisOptions): Promise<GhostApp> {
  const p = page()
  const app = Fastify()
  await app.register(fastifyAegis, options)
  app.all('/page', (_req, reply) => {
    const [status, body] = p.answer()
    return reply.code(status).type(contentType(status)).send(body)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    port: (app.server.address() as AddressInfo).port,
    server: app.server,
    fail: p.set,
    close: () => app.close(),
  }
}

async function koaGhost(options: AegisOptions): Promise<GhostApp> {
  const p = page()
  const app = new Koa()
  app.silent = true
  const shield = koaAegis(options)
  app.use(shield)
  app.use((ctx) => {
    if (ctx.path !== '/page') return
    const [status, body] = p.answer()
    ctx.status = status
    ctx.type = contentType(status)
    ctx.body = body
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), server, fail: p.set, close: () => shield.close() }
}

async function nodeGhost(options: AegisOptions): Promise<GhostApp> {
  const p = page()
  const core = createAegis(options)
  const server = createServer(
    core.handler((req: IncomingMessage, res: ServerResponse) => {
      if (req.url?.split('?')[0] !== '/page') {
        res.statusCode = 404
        return void res.end()
      }
      const [status, body] = p.answer()
      res.writeHead(status, { 'content-type': contentType(status) })
      res.end(body)
    }),
  )
  core.attach(server)
  return { port: await listen(server), server, fail: p.set, close: () => core.close() }
}

export const ghostApps = [
  ['express', expressGhost],
  ['fastify', fastifyGhost],
  ['koa', koaGhost],
  ['node', nodeGhost],
] as const
