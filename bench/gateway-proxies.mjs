/**
 * The gateway benchmark's processes: `node gateway-proxies.mjs backend` (the
 * one backend every variant forwards to) and `node gateway-proxies.mjs <proxy>
 * <backendPort>` (one proxy under test). Each listens on 127.0.0.1, reports
 * its port over IPC and answers `cpu` with its own process.cpuUsage() and
 * `heap-start` / `heap-stop` with its allocations, like server.mjs. nginx is
 * not here: gateway.mjs runs the binary itself.
 *
 * Backend: `GET /small` answers a small JSON, `GET /large` 100 KiB, both with
 * Content-Length, keep-alive.
 */
import { createServer, Agent } from 'node:http'
import { pathToFileURL } from 'node:url'
import { aegisImports, importAegis } from './lib/aegis.mjs'
import { answerHeapSampling } from './lib/heap.mjs'
import { fastifyHandler, listen } from './variants.mjs'

export const SMALL = JSON.stringify({ hello: 'world' })
export const LARGE_BYTES = 100 * 1024
const large = Buffer.alloc(LARGE_BYTES, 0x61)

/** Aegis' gateways here: the defaults but the limiter (wrk is one client), one route to the backend. */
const gatewayOptions = (backend) => ({ limiter: false, proxy: [{ prefix: '/', upstreams: [backend] }] })

/** Every proxy forwards everything under / to the backend (paths unchanged). */
export const proxies = {
  async backend() {
    const server = createServer((req, res) => {
      if (req.url === '/large') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE_BYTES })
        res.end(large)
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(SMALL) })
        res.end(SMALL)
      }
    })
    server.keepAliveTimeout = 60_000
    return listen(server)
  },

  /** http-proxy (node-http-proxy) on a bare Node server, with a keep-alive agent. */
  async 'node-http-proxy'(backend) {
    const { default: httpProxy } = await import('http-proxy')
    const agent = new Agent({ keepAlive: true, maxSockets: 128 })
    const proxy = httpProxy.createProxyServer({ target: backend, agent })
    proxy.on('error', (_err, _req, res) => {
      res.writeHead?.(502)
      res.end()
    })
    return listen(createServer((req, res) => proxy.web(req, res)))
  },

  /** @fastify/http-proxy (undici underneath). */
  async 'fastify-http-proxy'(backend) {
    const { default: Fastify } = await import('fastify')
    const { default: proxy } = await import('@fastify/http-proxy')
    const app = Fastify()
    await app.register(proxy, { upstream: backend })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return app.server
  },

  /** http-proxy-middleware on Express 5. */
  async 'express-hpm'(backend) {
    const { default: express } = await import('express')
    const { createProxyMiddleware } = await import('http-proxy-middleware')
    const app = express()
    app.use(
      createProxyMiddleware({ target: backend, agent: new Agent({ keepAlive: true, maxSockets: 128 }) }),
    )
    return listen(createServer(app))
  },

  /** The Aegis gateway on Fastify: defaults but the limiter (wrk is one client). */
  async 'fastify-aegis'(backend) {
    const { default: Fastify } = await import('fastify')
    const { aegis } = await importAegis('fastify')
    const app = Fastify({ requestTimeout: 30_000 }) // as Aegis advises (it warns without one)
    await app.register(aegis, gatewayOptions(backend))
    await app.listen({ port: 0, host: '127.0.0.1' })
    return app.server
  },

  /** The standalone gateway, `aegis serve`'s (@aegis/cli startGateway on node:http): the same options. */
  async 'aegis-serve'(backend) {
    const { startGateway } = await importAegis('cli')
    const quiet = { info() {}, warn() {}, error() {} }
    const gateway = await startGateway({
      options: gatewayOptions(backend),
      port: 0,
      host: '127.0.0.1',
      logger: quiet,
    })
    return gateway.server
  },

  async 'express-aegis'(backend) {
    const { default: express } = await import('express')
    const { aegis } = await importAegis('express')
    const app = express()
    return aegisGateway(aegis, app, backend, () => app)
  },

  async 'koa-aegis'(backend) {
    const { default: Koa } = await import('koa')
    const { aegis } = await importAegis('koa')
    const app = new Koa()
    return aegisGateway(aegis, app, backend, () => app.callback())
  },
}

/**
 * Two of the Aegis gateways as bare request handlers, not listening (interleaved.mjs
 * serves both from one server): the Fastify one, and the standalone one of `aegis serve`
 * (what its `startGateway()` mounts on its node:http server: `createAegis(options).handler()`).
 */
export const gatewayHandlers = {
  async 'fastify-aegis'(backend) {
    const { aegis } = await importAegis('fastify')
    return fastifyHandler({ requestTimeout: 30_000 }, (app) => app.register(aegis, gatewayOptions(backend)))
  },
  async 'aegis-serve'(backend) {
    const { createAegis } = await importAegis('core')
    return createAegis(gatewayOptions(backend)).handler()
  },
}

/** The proxies as benchmark variants (`--gateway` of allocations.mjs and instructions.mjs), `only` a list of names. */
export function gatewayVariants(only) {
  const names = Object.keys(proxies).filter((n) => n !== 'backend')
  const chosen = only === undefined ? names : only.split(',').map((s) => s.trim())
  const unknown = chosen.filter((n) => !names.includes(n))
  if (unknown.length > 0)
    throw new Error(`unknown proxy(s): ${unknown.join(', ')}; known: ${names.join(', ')}`)
  // Each its own `framework`: none is compared with a bare framework.
  return chosen.map((name) => ({ name, label: name, framework: name, stack: 'proxy' }))
}

/** Express or Koa: Aegis' defaults but the limiter, then one proxy route to the backend. */
async function aegisGateway(aegis, app, backend, handler) {
  const shield = aegis({ limiter: false })
  app.use(shield)
  app.use(shield.proxy({ upstreams: [backend] }))
  const server = await listen(createServer(handler())) // Koa's callback() only after its use() calls
  shield.attach(server)
  return server
}

// Run as a child of gateway.mjs (not when another script imports it).
if (
  process.send !== undefined &&
  process.argv[2] !== undefined &&
  process.argv[1] !== undefined &&
  import.meta.url === pathToFileURL(process.argv[1]).href
) {
  const start = proxies[process.argv[2]]
  if (start === undefined) throw new Error(`unknown proxy ${process.argv[2]}`)
  const server = await start(
    process.argv[3] === undefined ? undefined : `http://127.0.0.1:${process.argv[3]}`,
  )
  process.on('message', (message) => {
    if (message === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage() })
    answerHeapSampling(message)
  })
  process.on('disconnect', () => process.exit(0))
  // Where Aegis came from: an A/B run checks each proxy ran the build it meant.
  process.send({ type: 'ready', port: server.address().port, aegis: await aegisImports() })
}
