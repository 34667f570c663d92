/**
 * The evaluation's target: the site of site.mjs on Express 5, Fastify 5, Koa 3
 * and plain node:http, each behind its Aegis adapter (the built packages, as
 * the other benchmarks import them), listening on 127.0.0.1.
 *
 * Routes: `GET /` and `/page/:n` (HTML), `/static/*` (assets), `POST /login`
 * (JSON `{ user, password }`: 401 unless the password is right),
 * `GET /api/items/:id` (200, 403 for private items, 404 past the last),
 * `GET /api/poll`; anything else 404.
 *
 * Aegis is mounted with `trustProxy: 'loopback'` (the evaluator names each
 * client in X-Forwarded-For), the rate limiter off unless asked for (what is
 * measured is the anomaly engine alone), and the anomaly engine in block mode
 * with its debug header and the evaluator's virtual clock — when this build of
 * Aegis has the option. `anomaly: 'auto'` asks the options schema, so the same
 * runner measures the engine the day it lands without a change here.
 */
import { once } from 'node:events'
import { createServer } from 'node:http'
import { importAegis } from '../lib/aegis.mjs'
import { COMMON_ASSETS, assetType, itemStatus, pageStatus, passwordFor } from './site.mjs'

/** The adapters, in the order a full run measures them. */
export const ADAPTERS = ['express', 'fastify', 'koa', 'node']

// ── The answers, the same on every adapter ───────────────────────────────────

const page = (title) =>
  `<!doctype html><html><head><title>${title}</title>${COMMON_ASSETS.slice(0, 5)
    .map((a) => (a.endsWith('.css') ? `<link rel="stylesheet" href="${a}">` : `<script src="${a}"></script>`))
    .join('')}</head><body><h1>${title}</h1><p>Items, prices, reviews.</p></body></html>`
const HOME = page('Shop')
const pageHtml = (n) => page(`Page ${n}`)
/** A few hundred bytes for every asset: what is measured is who asked, not the bytes. */
const ASSET = Buffer.alloc(256, 0x20)

/** What an answer is: status, content type, body. */
const html = (body, status = 200) => ({ status, type: 'text/html; charset=utf-8', body })
const json = (value, status = 200) => ({
  status,
  type: 'application/json; charset=utf-8',
  body: JSON.stringify(value),
})
const NOT_FOUND = json({ error: 'not found' }, 404)

const answerPage = (n) => (pageStatus(n) === 200 ? html(pageHtml(n)) : html(page('Not found'), 404))
const answerAsset = (path) => ({ status: 200, type: assetType(path), body: ASSET })
function answerItem(id) {
  const status = itemStatus(id)
  if (status === 200) return json({ id: Number(id), name: `Item ${id}`, price: (Number(id) % 97) + 0.99 })
  return json({ error: status === 403 ? 'private' : 'not found' }, status)
}
const answerPoll = () => json({ ok: true, changes: [] })
function answerLogin(body) {
  const { user, password } = typeof body === 'object' && body !== null ? body : {}
  if (typeof user !== 'string' || typeof password !== 'string')
    return json({ error: 'user and password' }, 400)
  return password === passwordFor(user) ? json({ ok: true }) : json({ error: 'invalid credentials' }, 401)
}

/** A request body read whole and parsed as JSON (`undefined` when it is not). */
async function readJson(stream) {
  const chunks = []
  for await (const chunk of stream) chunks.push(chunk)
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    return undefined
  }
}

// ── One app per adapter ───────────────────────────────────────────────────────

async function expressApp(options) {
  const [{ default: express }, { aegis }] = await Promise.all([import('express'), importAegis('express')])
  const app = express()
  const shield = aegis(options)
  app.use(shield)
  const send = (res, a) => res.status(a.status).type(a.type).send(a.body)
  app.get('/', (_req, res) => send(res, html(HOME)))
  app.get('/page/:n', (req, res) => send(res, answerPage(req.params.n)))
  app.get('/static/*path', (req, res) => send(res, answerAsset(req.path)))
  app.post('/login', express.json(), (req, res) => send(res, answerLogin(req.body)))
  app.get('/api/items/:id', (req, res) => send(res, answerItem(req.params.id)))
  app.get('/api/poll', (_req, res) => send(res, answerPoll()))
  app.use((_req, res) => send(res, NOT_FOUND))
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  await once(server, 'listening')
  return { server, core: shield.core, close: () => shield.close() }
}

async function fastifyApp(options) {
  const [{ default: Fastify }, { aegis }] = await Promise.all([import('fastify'), importAegis('fastify')])
  // Fastify sets no request timeout of its own; Aegis warns about it (slowloris). 30 s as in the conformance apps.
  const app = Fastify({ requestTimeout: 30_000 })
  await app.register(aegis, options)
  const send = (reply, a) => reply.code(a.status).type(a.type).send(a.body)
  app.get('/', (_req, reply) => send(reply, html(HOME)))
  app.get('/page/:n', (req, reply) => send(reply, answerPage(req.params.n)))
  app.get('/static/*', (req, reply) => send(reply, answerAsset(req.url)))
  app.post('/login', (req, reply) => send(reply, answerLogin(req.body)))
  app.get('/api/items/:id', (req, reply) => send(reply, answerItem(req.params.id)))
  app.get('/api/poll', (_req, reply) => send(reply, answerPoll()))
  app.setNotFoundHandler((_req, reply) => send(reply, NOT_FOUND))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { server: app.server, core: app.aegis, close: () => app.close() }
}

async function koaApp(options) {
  const [{ default: Koa }, { default: Router }, { aegis }] = await Promise.all([
    import('koa'),
    import('@koa/router'),
    importAegis('koa'),
  ])
  const app = new Koa()
  app.silent = true
  const shield = aegis(options)
  const router = new Router()
  const send = (ctx, a) => {
    ctx.status = a.status
    ctx.type = a.type
    ctx.body = a.body
  }
  app.use(shield)
  router.get('/', (ctx) => send(ctx, html(HOME)))
  router.get('/page/:n', (ctx) => send(ctx, answerPage(ctx.params.n)))
  router.get('/static/*path', (ctx) => send(ctx, answerAsset(ctx.path)))
  router.post('/login', async (ctx) => send(ctx, answerLogin(await readJson(ctx.req))))
  router.get('/api/items/:id', (ctx) => send(ctx, answerItem(ctx.params.id)))
  router.get('/api/poll', (ctx) => send(ctx, answerPoll()))
  app.use(router.routes())
  app.use((ctx) => send(ctx, NOT_FOUND))
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  await once(server, 'listening')
  return { server, core: shield.core, close: () => shield.close() }
}

/** The plain node:http app: a hand-written router that tells Aegis the matched route template. */
async function nodeApp(options) {
  const { createAegis } = await importAegis('core')
  const core = createAegis(options)
  const write = (res, a) => {
    res.statusCode = a.status
    res.setHeader('content-type', a.type)
    res.setHeader('content-length', Buffer.byteLength(a.body))
    res.end(a.body)
  }
  const routed = (req, route) => {
    const state = core.stateOf(req)
    if (state !== undefined) state.route = route
  }
  async function app(req, res) {
    const path = (req.url ?? '/').split('?', 1)[0]
    const parts = path.split('/')
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (path === '/') return (routed(req, '/'), write(res, html(HOME)))
      if (parts.length === 3 && parts[1] === 'page')
        return (routed(req, '/page/:n'), write(res, answerPage(parts[2])))
      if (parts[1] === 'static' && parts.length > 2)
        return (routed(req, '/static/*path'), write(res, answerAsset(path)))
      if (parts.length === 4 && parts[1] === 'api' && parts[2] === 'items')
        return (routed(req, '/api/items/:id'), write(res, answerItem(parts[3])))
      if (path === '/api/poll') return (routed(req, '/api/poll'), write(res, answerPoll()))
    } else if (req.method === 'POST' && path === '/login') {
      routed(req, '/login')
      return write(res, answerLogin(await readJson(req)))
    }
    write(res, NOT_FOUND)
  }
  const server = createServer(core.handler(app))
  core.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, core, close: () => core.close() }
}

const APPS = { express: expressApp, fastify: fastifyApp, koa: koaApp, node: nodeApp }

/**
 * Whether this build of Aegis accepts `anomaly` with `section` (its options
 * schema decides; nothing is started). When it does not: `reason`, and
 * `absent` when the build has no `anomaly` option at all.
 *
 * @example
 * const { supported, reason } = await anomalySupport({ mode: 'block', header: true, clock: () => 0 })
 */
export async function anomalySupport(section) {
  const { parseOptions } = await importAegis('core')
  try {
    parseOptions({ trustProxy: 'loopback', limiter: false, anomaly: section })
    return { supported: true }
  } catch (err) {
    // AegisConfigError lists what it refused, with the path: the useful part when the option is missing.
    const issues = Array.isArray(err?.issues) ? err.issues : []
    return {
      supported: false,
      // Absent: the only complaint is that the top-level `anomaly` key is unknown.
      absent: issues.length > 0 && issues.every((i) => i.path === 'anomaly' && /unknown/i.test(i.message)),
      reason:
        issues.length > 0
          ? issues.map((i) => `${i.path}: ${i.message}`).join('; ')
          : String(err?.message ?? err),
    }
  }
}

/**
 * Start the target app on `adapter`, listening on 127.0.0.1.
 *
 * `anomaly`: `'auto'` (default) turns the engine on when the build has the
 * option (and throws when it refuses this section), `'on'` insists (throws
 * when the option is missing too), `'off'` leaves the option out. `clock`: the virtual now, in ms, handed to the engine.
 * `limiter`: keep Aegis' rate limiter on its defaults (off by default here).
 * `anomalyOptions`: more fields for the anomaly section (for tuning runs).
 *
 * @example
 * const app = await startApp('fastify', { clock: () => now })
 * // … requests to app.url …
 * await app.close()
 */
export async function startApp(
  adapter,
  { clock, anomaly = 'auto', limiter = false, anomalyOptions = {} } = {},
) {
  const make = APPS[adapter]
  if (make === undefined) throw new Error(`unknown adapter ${adapter} (one of ${ADAPTERS.join(', ')})`)
  const section = {
    mode: 'block',
    header: true,
    ...anomalyOptions,
    ...(clock === undefined ? {} : { clock }),
  }
  let engine = { on: false, note: 'left out (--anomaly off)' }
  if (anomaly !== 'off') {
    const support = await anomalySupport(section)
    if (support.supported) engine = { on: true, note: 'on: block mode, debug header, virtual clock' }
    // 'auto' runs without the engine only where the build has no such option; an engine that
    // refuses this section (a field renamed) must not pass for an absent one.
    else if (anomaly === 'on' || !support.absent)
      throw new Error(`this build of Aegis refuses the anomaly section: ${support.reason}`)
    else engine = { on: false, note: `not in this build (${support.reason})` }
  }
  const options = {
    trustProxy: 'loopback',
    ...(limiter ? {} : { limiter: false }),
    ...(engine.on ? { anomaly: section } : {}),
  }
  const started = await make(options)
  const { port } = started.server.address()
  return { adapter, url: `http://127.0.0.1:${port}`, port, anomaly: engine, ...started }
}
