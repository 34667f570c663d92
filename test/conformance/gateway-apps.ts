/**
 * A gateway on Express, Fastify, Koa and plain `node:http`, each mounted the
 * framework's way: Express `app.use(prefix, shield.proxy(route))` (the mount path
 * is the prefix), Koa `app.use(shield.proxy(route))`, Fastify and `node:http`
 * `proxy: [route]`. Each also serves `GET /local` itself and counts the body of
 * `POST /local/upload`.
 */
import { request as httpRequest, type Agent, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import {
  createAegis,
  type Aegis,
  type AegisOptions,
  type ProxyRoute,
  type ProxyRouteOptions,
} from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'
import { createRouter, sendJson } from '../helpers/node-router.js'
import { countBody, listen, nodeServed } from './apps.js'

export interface GatewayApp {
  readonly name: 'express' | 'fastify' | 'koa' | 'node'
  readonly url: string
  readonly port: number
  readonly core: Aegis
  readonly server: Server
  /** The routes given to the factory, however they were mounted, in order. */
  readonly routes: readonly ProxyRoute[]
  close(): Promise<void>
}

export type GatewayFactory = (routes: ProxyRouteOptions[], options?: AegisOptions) => Promise<GatewayApp>

/** An Express or Koa gateway on its attached server. */
export async function served(
  name: 'express' | 'koa',
  server: Server,
  shield: { core: Aegis; attach(server: Server): void; close(): Promise<void> },
  routes: readonly ProxyRoute[],
): Promise<GatewayApp> {
  shield.attach(server)
  const port = await listen(server)
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    port,
    core: shield.core,
    server,
    routes,
    close: () => shield.close(),
  }
}

export const expressGateway: GatewayFactory = async (routes, options = {}) => {
  const app = express()
  const shield = expressAegis(options)
  app.use(shield)
  app.get('/local', (_req, res) => res.json({ local: true }))
  app.post('/local/upload', (req, res, next) => {
    countBody(req).then((bytes) => res.json({ bytes }), next)
  })
  // The documented mount (the path is the prefix), except for routes that take WebSocket
  // upgrades: those name their prefix and are mounted at the root.
  const mounted = routes.map(({ prefix = '/', ...route }) => {
    const upgrades = prefix === '/ws'
    const proxy = shield.proxy(upgrades ? { prefix, ...route } : route)
    if (upgrades) app.use(proxy)
    else app.use(prefix, proxy)
    return proxy.route
  })
  return served('express', app.listen(0, '127.0.0.1'), shield, mounted)
}

export const fastifyGateway: GatewayFactory = async (routes, options = {}) => {
  const app = Fastify({ requestTimeout: 30_000 })
  await app.register(fastifyAegis, { ...options, proxy: [...(options.proxy ?? []), ...routes] })
  app.get('/local', () => ({ local: true }))
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => {
    countBody(payload).then((bytes) => done(null, bytes), done)
  })
  app.post('/local/upload', (req) => ({ bytes: req.body }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  return {
    name: 'fastify',
    url: `http://127.0.0.1:${port}`,
    port,
    core: app.aegis,
    server: app.server,
    routes: routes.map((r) => app.aegis.gateway.routes.find((x) => x.config.prefix === (r.prefix ?? '/'))!),
    close: () => app.close(),
  }
}

export const koaGateway: GatewayFactory = async (routes, options = {}) => {
  const app = new Koa()
  app.silent = true
  const shield = koaAegis(options)
  app.use(shield)
  app.use(async (ctx, next) => {
    if (ctx.path === '/local' && ctx.method === 'GET') ctx.body = { local: true }
    else if (ctx.path === '/local/upload' && ctx.method === 'POST')
      ctx.body = { bytes: await countBody(ctx.req) }
    else await next()
  })
  const mounted = routes.map((route) => {
    const proxy = shield.proxy(route)
    app.use(proxy)
    return proxy.route
  })
  return served('koa', app.listen(0, '127.0.0.1'), shield, mounted)
}

/** The `proxy` option's routes, served by `core.handler(app)` before a tiny app of its own. */
export const nodeGateway: GatewayFactory = async (routes, options = {}) => {
  const core = createAegis({ ...options, proxy: [...(options.proxy ?? []), ...routes] })
  const router = createRouter()
  router.add('GET', '/local', (_req, res) => sendJson(res, 200, { local: true }))
  router.add('POST', '/local/upload', async (req, res) => sendJson(res, 200, { bytes: await countBody(req) }))
  return {
    ...(await nodeServed(core, router.listener)),
    routes: routes.map((r) => core.gateway.routes.find((x) => x.config.prefix === (r.prefix ?? '/'))!),
  }
}

export const gateways = [
  ['express', expressGateway],
  ['fastify', fastifyGateway],
  ['koa', koaGateway],
  ['node', nodeGateway],
] as const

/** What {@link timedGet} saw: the status, the problem code if any, the upstream that answered, and how long it took. */
export interface TimedReply {
  status: number
  code: string | undefined
  upstream: string | undefined
  ms: number
}

/** One GET through the gateway on `agent`; with `timeoutMs`, a hang fails the test instead of stalling it. */
export function timedGet(
  app: GatewayApp,
  path: string,
  agent: Agent,
  timeoutMs?: number,
): Promise<TimedReply> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: app.port, path, agent }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        const problem = res.headers['content-type']?.startsWith('application/problem+json') === true
        resolve({
          status: res.statusCode ?? 0,
          code: problem ? (JSON.parse(text) as { code?: string }).code : undefined,
          upstream: res.headers['x-upstream'] as string | undefined,
          ms: performance.now() - t0,
        })
      })
    })
    if (timeoutMs !== undefined)
      req.setTimeout(timeoutMs, () =>
        req.destroy(new Error(`GET ${path} got no answer within ${timeoutMs} ms`)),
      )
    req.on('error', reject)
    req.end()
  })
}
