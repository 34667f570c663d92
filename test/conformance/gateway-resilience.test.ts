/**
 * The gateway when upstreams fail, on every adapter, with real upstream
 * servers on loopback: one killed mid-load, brought back; all of them down.
 */
import { Agent } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, timedGet, type GatewayApp, type TimedReply } from './gateway-apps.js'
import { sleep, waitFor } from '../helpers/wait.js'

const agent = new Agent({ keepAlive: true, maxSockets: 32 })

type Result = TimedReply

const get = (app: GatewayApp, path: string): Promise<Result> => timedGet(app, path, agent)

/** Keep `concurrency` GETs in flight until `until()` says stop; every result, in order of completion. */
async function load(app: GatewayApp, concurrency: number, until: () => boolean): Promise<Result[]> {
  const results: Result[] = []
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (!until()) results.push(await get(app, '/svc/x'))
    }),
  )
  return results
}

describe.each(gateways)('gateway resilience on %s', (_name, createGateway) => {
  const upstreams: Upstream[] = []
  let app: GatewayApp | undefined

  afterEach(async () => {
    await app?.close()
    app = undefined
    await Promise.all(upstreams.splice(0).map((u) => u.close()))
  })

  it('an upstream killed mid-load fails no GET; it comes back through health checks and slow start', async () => {
    const healthy = (name: string) =>
      startUpstream(name, (req, res, seen) => {
        res.setHeader('x-upstream', name)
        res.end(req.url === '/health' ? 'ok' : JSON.stringify(seen))
      })
    const a = await healthy('a')
    const b = await healthy('b')
    const c = await healthy('c')
    upstreams.push(a, b, c)
    app = await createGateway(
      [
        {
          prefix: '/svc',
          name: 'svc',
          upstreams: [a.url, b.url, c.url],
          healthCheck: {
            path: '/health',
            interval: 100,
            timeout: 200,
            healthyThreshold: 2,
            unhealthyThreshold: 2,
          },
          outlier: { consecutiveConnectErrors: 2, baseEjectionTime: 60_000 },
          slowStart: 1_500,
          // "No failed GET while the retry budget lasts": a budget as large as the load's
          // concurrency (8), so that every request cut by the kill may be retried at once.
          retry: { attempts: 3, budget: { minConcurrent: 8 } },
        },
      ],
      { limiter: false },
    )
    const gw = app

    // Load, with b killed 300 ms in.
    let stop = false
    const running = load(gw, 8, () => stop)
    await sleep(300)
    await b.close()
    await sleep(900)
    stop = true
    const during = await running
    expect(during.length).toBeGreaterThan(50)
    const failed = during.filter((r) => r.status !== 200)
    const retries = ((await gw.core.scrapeMetrics())?.body ?? '').match(/aegis_upstream_retries_total.*/g)
    expect(failed, `${JSON.stringify(failed.slice(0, 3))} ${String(retries)}`).toEqual([])

    // Ejected (or failing its checks): no request reaches b, and none fails.
    const after = await Promise.all(Array.from({ length: 60 }, () => get(gw, '/svc/x')))
    expect(after.every((r) => r.status === 200)).toBe(true)
    expect(after.filter((r) => r.upstream === 'b')).toEqual([])

    // b comes back on its port: health checks see it, slow start ramps its share.
    const b2 = await startUpstream(
      'b',
      (req, res, seen) => {
        res.setHeader('x-upstream', 'b')
        res.end(req.url === '/health' ? 'ok' : JSON.stringify(seen))
      },
      { port: b.port },
    )
    upstreams.push(b2)
    await waitFor('b back in rotation', async () => (await get(gw, '/svc/x')).upstream === 'b')
    const share = async (n: number) => {
      const rs = await Promise.all(Array.from({ length: n }, () => get(gw, '/svc/x')))
      expect(rs.every((r) => r.status === 200)).toBe(true)
      return rs.filter((r) => r.upstream === 'b').length / n
    }
    const early = await share(300)
    await sleep(1_600)
    const late = await share(300)
    expect(early).toBeLessThan(late)
    expect(late).toBeGreaterThan(0.25)
    expect(late).toBeLessThan(0.42)
    // The audit trail tells b's story: out of rotation (failed checks, or ejected), then back.
    const story = (gw.core.audit?.entries() ?? []).filter((e) => 'upstream' in e && e.upstream === b.url)
    const out = story.findIndex(
      (e) => (e.type === 'upstream.health' && !e.healthy) || e.type === 'upstream.ejected',
    )
    const back = story.findLastIndex((e) => e.type === 'upstream.health' && e.healthy)
    expect(out, JSON.stringify(story)).toBeGreaterThanOrEqual(0)
    expect(back).toBeGreaterThan(out)
    expect(story.every((e) => 'route' in e && e.route === 'svc' && !Number.isNaN(Date.parse(e.time)))).toBe(
      true,
    )
    const scraped = (await gw.core.scrapeMetrics())?.body ?? ''
    expect(scraped).toMatch(
      /aegis_upstream_requests_total\{route="svc",upstream="http:\/\/127\.0\.0\.1:\d+",outcome="success"\} \d+/,
    )
  })

  it('every upstream down answers 503 at once, not after a timeout', async () => {
    // Accepts connections, never answers: each request would wait for the header timeout.
    const stuck = await startUpstream('stuck', () => undefined)
    const stuck2 = await startUpstream('stuck2', () => undefined)
    upstreams.push(stuck, stuck2)
    app = await createGateway(
      [
        {
          prefix: '/svc',
          name: 'svc',
          upstreams: [stuck.url, stuck2.url],
          timeouts: { headers: 300 },
          breaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeout: 30_000 },
          retry: false,
        },
      ],
      { limiter: false },
    )
    const gw = app
    const first = await Promise.all(Array.from({ length: 4 }, () => get(gw, '/svc/x')))
    for (const r of first) expect(r.status).toBe(504)
    const fast = await Promise.all(Array.from({ length: 20 }, () => get(gw, '/svc/x')))
    for (const r of fast) {
      expect(r.status).toBe(503)
      expect(r.code).toBe('AEGIS_ERR_NO_UPSTREAM')
      expect(r.ms).toBeLessThan(150)
    }
    const scraped = (await gw.core.scrapeMetrics())?.body ?? ''
    expect(scraped).toMatch(/aegis_upstream_breaker_state\{route="svc",upstream="[^"]+"\} 2/)
    // Both openings are audit entries of this instance's own making.
    const opened = gw.core.audit
      ?.entries({ types: ['upstream.breaker'] })
      .map((e) => `${e.route} ${e.upstream} ${e.state} ${e.origin}`)
      .sort()
    expect(opened).toEqual([`svc ${stuck.url} open local`, `svc ${stuck2.url} open local`].sort())
  })
})
