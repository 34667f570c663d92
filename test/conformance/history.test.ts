/**
 * The metrics history on every adapter: real HTTP requests — answered by the app,
 * refused by Aegis, forwarded to a real upstream — land in `aegis.history`, counted once.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions, HistoryResult } from '@aegis/core'
import { send, sendMany } from '../helpers/send.js'
import { refusedUrl, startUpstream, type Upstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait.js'
import { adapters, type TestApp } from './apps.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

const total = (r: HistoryResult, name: string): number =>
  (r.series[name]?.sum ?? []).reduce((a, b) => a + b, 0)

describe.each(adapters)('%s: metrics history', (_name, make) => {
  let app: TestApp | undefined
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('every request lands once: statuses, rejections by reason, latency', async () => {
    const options: AegisOptions = { history: { sampleMs: 0 } }
    const a = (app = await make(options))
    const history = a.core.history
    expect(history).toBeDefined()
    const answers = [
      ...(await sendMany(5, `${a.url}/`)),
      ...(await sendMany(3, (i) => `${a.url}/nothing-here-${i}`)),
      await send(`${a.url}/`, { method: 'PROPFIND' }),
    ]
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 404, 404, 404, 405])
    // Observed when each response closes on the server.
    await waitFor('9 requests in the history', async () => {
      const r = await history!.query({ range: '10m', series: ['requests'] })
      return total(r, 'requests') >= 9
    })
    const r = await history!.query({ range: '10m' })
    expect(total(r, 'requests')).toBe(9)
    expect(total(r, 'status.2xx')).toBe(5)
    expect(total(r, 'status.4xx')).toBe(4)
    expect(total(r, 'rejected')).toBe(1)
    expect(total(r, 'rejected.method')).toBe(1)
    expect(r.series.latency!.count.reduce((x, y) => x + y, 0)).toBe(9)
    expect(r.histograms.latency!.counts.flat().reduce((x, y) => x + y, 0)).toBe(9)
    const live = history!.live(60)
    expect(total(live, 'requests')).toBe(9)
  })

  it('off by default', async () => {
    const a = (app = await make({}))
    expect(a.core.history).toBeUndefined()
  })
})

describe.each(gateways)('gateway on %s: metrics history', (_name, createGateway) => {
  let gw: GatewayApp | undefined
  let upstream: Upstream | undefined
  afterEach(async () => {
    await gw?.close()
    await upstream?.close()
    gw = undefined
    upstream = undefined
  })

  it('upstream exchanges, their errors and latency', async () => {
    upstream = await startUpstream('a')
    const gone = await refusedUrl()
    gw = await createGateway(
      [
        { prefix: '/api', upstreams: [{ url: upstream.url }] },
        { prefix: '/down', upstreams: [{ url: gone }], retry: false },
      ],
      { history: { sampleMs: 0 } },
    )
    const ok = await sendMany(4, `${gw.url}/api/x`)
    expect(ok.every((r) => r.status === 200)).toBe(true)
    expect((await send(`${gw.url}/down/x`)).status).toBe(502)
    const history = gw.core.history!
    await waitFor(
      '5 requests in the history',
      async () => total(await history.query({ range: '10m' }), 'requests') >= 5,
    )
    const r = await history.query({ range: '10m' })
    expect(total(r, 'upstream.requests')).toBe(5)
    expect(total(r, 'upstream.errors')).toBe(1)
    expect(r.series['upstream.latency']!.count.reduce((x, y) => x + y, 0)).toBe(5)
    expect(total(r, 'status.5xx')).toBe(1)
    expect(total(r, 'rejected.upstream-unavailable')).toBe(1)
  })
})
