/**
 * The gateway on the typed event bus (issue 15): upstream state changes and fault-injection
 * switches are events (`upstream.breaker`, `upstream.health`, `upstream.ejected`,
 * `proxy.chaos`); the audit trail and `route.events` listen to the bus. Real upstreams on
 * loopback behind a real instance.
 */
import { once } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis, type AegisEvents, type AuditEntry, type TypedEvent } from '../src/index.js'
import { refusedUrl, startUpstream, type Upstream } from '../../../test/helpers/upstream.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { sleep, waitFor } from '../../../test/helpers/wait.js'

failOnUncaught()

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

/** An instance whose error log is kept. */
function instance(options: Parameters<typeof createAegis>[0] = {}): {
  core: Aegis
  errors: [string | undefined, object][]
} {
  const errors: [string | undefined, object][] = []
  const core = createAegis({
    limiter: false,
    logger: {
      info: () => undefined,
      warn: () => undefined,
      error: (obj, msg) => void errors.push([msg, obj]),
    },
    ...options,
  })
  open.push(core)
  return { core, errors }
}

async function upstream(...args: Parameters<typeof startUpstream>): Promise<Upstream> {
  const u = await startUpstream(...args)
  open.push(u)
  return u
}

const checks = { path: '/health', interval: 100, timeout: 100, unhealthyThreshold: 1 } as const

describe('the gateway on the event bus', () => {
  it('feeds route.events from the bus, and the audit trail records the very same events, shaped as before', async () => {
    const down = await refusedUrl()
    const { core } = instance()
    const route = core.proxy({ prefix: '/api', name: 'api', upstreams: [down], healthCheck: checks })
    const onBus: TypedEvent[] = []
    core.events.onAny((e) => onBus.push(e))
    const byType: AegisEvents['upstream.health'][] = []
    core.events.on('upstream.health', (e) => byType.push(e))
    const [seen] = (await once(route.events, 'health', { signal: AbortSignal.timeout(3000) })) as [
      AegisEvents['upstream.health'],
    ]
    expect(seen).toEqual({ route: 'api', upstream: down, healthy: false })
    // One object: the route re-emits what the bus carried.
    expect(byType).toEqual([seen])
    expect(byType[0]).toBe(seen)
    expect(onBus).toEqual([{ type: 'upstream.health', route: 'api', upstream: down, healthy: false }])

    route.setChaos({ abort: { percent: 10, status: 503 } })
    const entries = core.audit?.entries() ?? []
    expect(entries).toEqual([
      {
        type: 'upstream.health',
        route: 'api',
        upstream: down,
        healthy: false,
        seq: 1,
        time: expect.any(String),
      },
      {
        type: 'proxy.chaos',
        route: 'api',
        chaos: { abort: { percent: 10, status: 503 } },
        seq: 2,
        time: expect.any(String),
      },
    ])
    // Field order as before (JSON sinks see the same text): the type first, then the event, then seq and time.
    expect(entries.map((e) => Object.keys(e))).toEqual([
      ['type', 'route', 'upstream', 'healthy', 'seq', 'time'],
      ['type', 'route', 'chaos', 'seq', 'time'],
    ])
    const typed: Extract<AuditEntry, { type: 'upstream.health' }>[] =
      core.audit?.entries({ types: ['upstream.health'] }) ?? []
    expect(typed.map((e) => e.healthy)).toEqual([false])
    expect(onBus.map((e) => e.type)).toEqual(['upstream.health', 'proxy.chaos'])
  })

  it('keeps route.events to its own route, even beside another route of the same name', async () => {
    const down = await refusedUrl()
    const up = await upstream('up')
    const { core } = instance()
    // Both named `/` (no prefix: Express mounts each at its own path).
    const failing = core.proxy({ upstreams: [down], healthCheck: checks })
    const healthy = core.proxy({ upstreams: [up.url], healthCheck: checks })
    const heard = { failing: [] as unknown[], healthy: [] as unknown[] }
    failing.events.on('health', (e) => heard.failing.push(e))
    healthy.events.on('health', (e) => heard.healthy.push(e))
    await waitFor('the failing route to report', () => heard.failing.length > 0)
    await sleep(300)
    expect(heard.failing).toEqual([{ route: '/', upstream: down, healthy: false }])
    expect(heard.healthy).toEqual([])
  })

  it('a throwing listener, on the bus or on route.events, breaks no breaker transition: reported, and the bus goes on', async () => {
    const stuck = await upstream('stuck', () => undefined)
    const { core, errors } = instance()
    const route = core.proxy({
      prefix: '/svc',
      name: 'svc',
      upstreams: [stuck.url],
      timeouts: { headers: 200 },
      breaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 30_000 },
      retry: false,
      outlier: false,
    })
    core.events.on('upstream.breaker', () => {
      throw new Error('dashboard feed down')
    })
    route.events.on('breaker', () => {
      throw new Error('listener bug')
    })
    const after: string[] = []
    core.events.on('upstream.breaker', (e) => after.push(e.state))
    const server = (await import('node:http')).createServer((req, res) => {
      if (route.handle(req, res, req.url ?? '/') === false) res.writeHead(404).end()
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    open.push({ close: () => new Promise((resolve) => server.close(() => resolve())) })
    const port = (server.address() as { port: number }).port
    const status = async (): Promise<number> => (await fetch(`http://127.0.0.1:${port}/svc/x`)).status
    expect(await Promise.all([status(), status()])).toEqual([504, 504])
    // Open: answered at once, without waiting for the upstream.
    expect(await status()).toBe(503)
    expect(after).toEqual(['open'])
    expect(core.audit?.entries({ types: ['upstream.breaker'] }).map((e) => [e.state, e.origin])).toEqual([
      ['open', 'local'],
    ])
    const metrics = (await core.scrapeMetrics())?.body ?? ''
    expect(metrics).toMatch(/aegis_upstream_breaker_state\{route="svc",upstream="[^"]+"\} 2/)
    expect(
      errors.map(([msg, obj]) => [msg, (obj as { type: string }).type, (obj as { err: Error }).err.message]),
    ).toEqual([
      // In subscription order: the route's own listener came first.
      ['event listener failed', 'upstream.breaker', 'listener bug'],
      ['event listener failed', 'upstream.breaker', 'dashboard feed down'],
    ])
    server.closeAllConnections()
  })

  it('closed routes leave the bus', async () => {
    const { core } = instance({ audit: false, proxy: [{ prefix: '/a', upstreams: [await refusedUrl()] }] })
    core.proxy({ prefix: '/b', upstreams: [await refusedUrl()] })
    expect(core.events.has('upstream.health')).toBe(true)
    await core.close()
    expect(core.events.has('upstream.health')).toBe(false)
  })
})

describe('the logs and the metrics of the gateway listen on the bus', () => {
  it('an event on the bus is logged once at its level and counted in its series, whoever emitted it', async () => {
    const lines: [string, string | undefined][] = []
    const core = createAegis({
      limiter: false,
      metrics: {},
      logger: {
        info: (_obj, msg) => void lines.push(['info', msg]),
        warn: (_obj, msg) => void lines.push(['warn', msg]),
        error: (_obj, msg) => void lines.push(['error', msg]),
      },
    })
    open.push(core)
    const at = { route: '/api', upstream: 'http://127.0.0.1:9' }
    core.events.emit('upstream.breaker', { ...at, state: 'open', origin: 'peer' })
    core.events.emit('upstream.health', { ...at, healthy: false })
    core.events.emit('upstream.ejected', { ...at, ms: 30_000 })
    core.events.emit('upstream.ejected', { ...at, ms: 30_000 })
    core.events.emit('proxy.chaos', { route: '/api', chaos: false })
    expect(lines).toEqual([
      ['warn', 'upstream breaker open'],
      ['warn', 'upstream unhealthy'],
      ['warn', 'upstream ejected'],
      ['warn', 'upstream ejected'],
      ['info', 'fault injection changed'],
    ])
    const text = (await core.scrapeMetrics())?.body ?? ''
    const labels = 'route="/api",upstream="http://127.0.0.1:9"'
    expect(text).toContain(`aegis_upstream_breaker_state{${labels}} 2`)
    expect(text).toContain(`aegis_upstream_healthy{${labels}} 0`)
    expect(text).toContain(`aegis_upstream_ejections_total{${labels}} 2`)
  })

  it('stops listening when the instance closes', async () => {
    const lines: string[] = []
    const core = createAegis({
      limiter: false,
      logger: {
        info: (_o, msg) => void lines.push(String(msg)),
        warn: () => undefined,
        error: () => undefined,
      },
    })
    const events = core.events
    await core.close()
    events.emit('proxy.chaos', { route: '/api', chaos: false })
    expect(lines).toEqual([])
  })
})
