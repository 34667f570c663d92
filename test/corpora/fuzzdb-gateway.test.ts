/**
 * Path-prefix escapes through the gateway: FuzzDB's traversal lists (see
 * fuzzdb.test.ts for the attribution; licence in
 * test/corpora/data/fuzzdb-traversal-ssrf-crlf/_copyright.txt) requested under a
 * route mounted at `/api` whose upstream maps it to `/mapped`, on Express,
 * Fastify and Koa, with the validator's own traversal check off so the
 * gateway's guarantee stands alone. Each request is refused (400 or the
 * framework's 404), or reaches the upstream under `/mapped/` with no reading
 * of the path — by the independent oracle of decodings.ts — holding a `..`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from '../conformance/gateway-apps.js'
import { traversalReadings } from './decodings.js'
import { corpusLines, exchange, pool } from './support.js'

const DIR = 'fuzzdb-traversal-ssrf-crlf/'
const paths = [
  ...corpusLines(`${DIR}traversals-8-deep-exotic-encoding.txt`).map((l) =>
    l.replaceAll('{FILE}', 'etc/passwd'),
  ),
  ...corpusLines(`${DIR}path-traversal-windows.txt`),
].map((l) => `/api/${l.replace(/^\/+/, '')}`)

describe.each(gateways)('path-prefix escapes through the gateway on %s', (_name, createGateway) => {
  let upstream: Upstream
  let app: GatewayApp

  beforeAll(async () => {
    upstream = await startUpstream('mapped')
    app = await createGateway([{ prefix: '/api', upstreams: [`${upstream.url}/mapped`] }], {
      limiter: false,
      validator: { traversal: false },
    })
  })
  afterAll(async () => {
    await app.close()
    await upstream.close()
  })

  it(`none of the ${paths.length} FuzzDB traversals leaves /mapped`, async () => {
    expect(paths.length).toBeGreaterThan(500)
    const statuses = await pool(paths, 20, async (path) => {
      const res = await exchange(
        app.port,
        `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      )
      return res.responses[0]?.status ?? 0
    })
    const unexpected = paths.filter((_, i) => ![200, 400, 404].includes(statuses[i] as number))
    expect(unexpected).toEqual([])
    for (const seen of upstream.seen) {
      expect(seen.url.startsWith('/mapped/') || seen.url === '/mapped', seen.url).toBe(true)
      expect(traversalReadings(seen.url.slice('/mapped'.length)), seen.url).toEqual([])
    }
    // Not vacuous: the gateway itself refused what it forwarded nothing for.
    expect(statuses.filter((s) => s === 400).length).toBeGreaterThan(0)
  })
})
