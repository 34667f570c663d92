/**
 * The measured apps. Every variant serves the same hello-world JSON on GET /;
 * only the middleware in front of it changes. Frameworks and middleware are
 * imported lazily inside `start`, so the runner can read this list without
 * loading any of them and each server process loads only its own stack.
 */
import { createServer } from 'node:http'

export const HELLO = { hello: 'world' }

// Far above anything a run can send: the limiters do their bookkeeping on
// every request but never answer 429. @fastify/rate-limit ignores non-finite
// limits (it falls back to its default of 1000), hence a finite number.
const NEVER = 1_000_000_000
const WINDOW_MS = 60_000

// A security header every guarded variant sets, and the limiters' header: the
// runner checks them once per run so a variant can't silently lose its stack.
const SECURITY_HEADER = 'x-content-type-options'
const LIMIT_HEADER = 'x-ratelimit-limit'

/** Listen on a free port of the loopback interface only. */
const listen = (server) =>
  new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })

/**
 * `mount(app)` adds the stack under test; it may return an object with
 * `attach(server)` (Aegis' documented setup for Express and Koa).
 */
async function express(mount) {
  const { default: express } = await import('express')
  const app = express()
  const guard = await mount?.(app)
  app.get('/', (_req, res) => {
    res.json(HELLO)
  })
  const server = createServer(app)
  guard?.attach(server)
  return listen(server)
}

async function fastify(mount) {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  await mount?.(app)
  app.get('/', async () => HELLO)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return app.server
}

async function koa(mount) {
  const { default: Koa } = await import('koa')
  const app = new Koa()
  const guard = await mount?.(app)
  app.use((ctx) => {
    ctx.body = HELLO
  })
  // Koa composes its middleware when `callback()` is called: mount first.
  const server = createServer(app.callback())
  guard?.attach(server)
  return listen(server)
}

/**
 * @typedef {object} Variant
 * @property {string} name        CLI and results name
 * @property {'express' | 'fastify' | 'koa'} framework
 * @property {'bare' | 'aegis' | 'peers'} stack
 * @property {string} label       what is in front of the handler, for the report
 * @property {string[]} expect    response headers proving the stack is mounted
 * @property {() => Promise<import('node:http').Server>} start  build and listen
 */

/** @type {Variant[]} */
export const variants = [
  {
    name: 'express',
    framework: 'express',
    stack: 'bare',
    label: 'Express',
    expect: [],
    start: () => express(),
  },
  {
    name: 'express-aegis',
    framework: 'express',
    stack: 'aegis',
    label: 'Express + Aegis',
    expect: [SECURITY_HEADER],
    start: () =>
      express(async (app) => {
        const { aegis } = await import('@aegis/express')
        const shield = aegis()
        app.use(shield)
        return shield
      }),
  },
  {
    name: 'express-peers',
    framework: 'express',
    stack: 'peers',
    label: 'Express + helmet + express-rate-limit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    start: () =>
      express(async (app) => {
        const { default: helmet } = await import('helmet')
        const { rateLimit } = await import('express-rate-limit')
        app.use(helmet())
        app.use(rateLimit({ windowMs: WINDOW_MS, limit: NEVER }))
      }),
  },
  {
    name: 'fastify',
    framework: 'fastify',
    stack: 'bare',
    label: 'Fastify',
    expect: [],
    start: () => fastify(),
  },
  {
    name: 'fastify-aegis',
    framework: 'fastify',
    stack: 'aegis',
    label: 'Fastify + Aegis',
    expect: [SECURITY_HEADER],
    start: () =>
      fastify(async (app) => {
        const { aegis } = await import('@aegis/fastify')
        await app.register(aegis)
      }),
  },
  {
    name: 'fastify-peers',
    framework: 'fastify',
    stack: 'peers',
    label: 'Fastify + @fastify/helmet + @fastify/rate-limit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    start: () =>
      fastify(async (app) => {
        const { default: helmet } = await import('@fastify/helmet')
        const { default: rateLimit } = await import('@fastify/rate-limit')
        await app.register(helmet)
        await app.register(rateLimit, { max: NEVER, timeWindow: WINDOW_MS })
      }),
  },
  {
    name: 'koa',
    framework: 'koa',
    stack: 'bare',
    label: 'Koa',
    expect: [],
    start: () => koa(),
  },
  {
    name: 'koa-aegis',
    framework: 'koa',
    stack: 'aegis',
    label: 'Koa + Aegis',
    expect: [SECURITY_HEADER],
    start: () =>
      koa(async (app) => {
        const { aegis } = await import('@aegis/koa')
        const shield = aegis()
        app.use(shield)
        return shield
      }),
  },
  {
    name: 'koa-peers',
    framework: 'koa',
    stack: 'peers',
    label: 'Koa + koa-helmet + koa-ratelimit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    start: () =>
      koa(async (app) => {
        const { default: helmet } = await import('koa-helmet')
        const { default: ratelimit } = await import('koa-ratelimit')
        app.use(helmet())
        app.use(ratelimit({ driver: 'memory', db: new Map(), duration: WINDOW_MS, max: NEVER }))
      }),
  },
]
