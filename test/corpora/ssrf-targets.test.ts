/**
 * ssrf-req-filter's must-block URLs (test/corpora/data/ssrf-req-filter-blocked-urls)
 * as run-time targets of a gateway route (`router(req)`), on every adapter:
 * each is refused by the gateway's own check (403, AEGIS_ERR_TARGET_REFUSED) —
 * not by a connection failure that would pass the test vacuously offline. DNS
 * names go through a stubbed lookup that answers the internal address the name
 * stands for; a lookup that answers an allowed address first and 127.0.0.1 next
 * (DNS rebinding) is refused on the second connection.
 */
import type { LookupAddress } from 'node:dns'
import { once } from 'node:events'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { gateways, type GatewayApp } from '../conformance/gateway-apps.js'
import { corpusLines } from './support.js'

const rows = corpusLines('ssrf-req-filter-blocked-urls/blocked-urls.tsv')
  .slice(1)
  .map((line) => {
    const [url, needsDns, whatwgHost] = line.split('\t')
    return { url: url as string, needsDns: needsDns === 'yes', whatwgHost: whatwgHost as string }
  })

/** Where each DNS name of the corpus points in the attacks it stands for. */
const internalFor = (host: string): string =>
  host.includes('169.254.169.254') ? '169.254.169.254' : '127.0.0.1'

type Answer = (hostname: string) => string
/** A `dns.lookup` stand-in: answers `answer(hostname)`, in both callback shapes Node uses. */
const stubLookup =
  (answer: Answer) =>
  (hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void): void => {
    const address = answer(hostname)
    const family = address.includes(':') ? 6 : 4
    queueMicrotask(() =>
      options.all === true
        ? callback(null, [{ address, family }] satisfies LookupAddress[])
        : callback(null, address, family),
    )
  }

function get(app: GatewayApp, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: app.port,
        path: '/out/x',
        headers: { 'x-target': encodeURIComponent(target) },
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

const router = (req: { headers: Record<string, string | string[] | undefined> }) =>
  decodeURIComponent(String(req.headers['x-target']))

it('reads the corpus: 52 URLs, 9 of them DNS names', () => {
  expect(rows).toHaveLength(52)
  expect(rows.filter((r) => r.needsDns)).toHaveLength(9)
})

describe.each(gateways)('run-time targets on %s', (_name, createGateway) => {
  let app: GatewayApp

  beforeAll(async () => {
    app = await createGateway(
      [
        {
          prefix: '/out',
          router: router,
          lookup: stubLookup((host) => internalFor(host)) as never,
          timeouts: { connect: 1_000, headers: 2_000 },
        },
      ],
      { limiter: false },
    )
  })
  afterAll(async () => {
    await app.close()
  })

  it.each(rows)('refuses $url', async ({ url }) => {
    const r = await get(app, url)
    expect(r.status, r.body).toBe(403)
    expect(JSON.parse(r.body)).toMatchObject({ code: 'AEGIS_ERR_TARGET_REFUSED' })
  })
})

describe('DNS rebinding', () => {
  let upstreamPort = 0
  let hits = 0
  const server = createServer((_req, res) => {
    hits++
    res.setHeader('connection', 'close') // every request needs a new connection, so a new lookup
    res.end('from 127.0.0.2')
  })

  beforeAll(async () => {
    // 127.0.0.2 stands in for a public address: the route's allowTargets admits it.
    server.listen(0, '127.0.0.2')
    await once(server, 'listening')
    upstreamPort = (server.address() as AddressInfo).port
  })
  afterAll(() => {
    server.close()
  })

  it.each(gateways)(
    'on %s: an allowed answer, then 127.0.0.1, is refused on the second connection',
    async (_n, create) => {
      const answers = ['127.0.0.2', '127.0.0.1', '127.0.0.1']
      let calls = 0
      const app = await create(
        [
          {
            prefix: '/out',
            router: router,
            allowTargets: ['127.0.0.2'],
            lookup: stubLookup(() => answers[Math.min(calls++, answers.length - 1)] as string) as never,
          },
        ],
        { limiter: false },
      )
      try {
        const before = hits
        const first = await get(app, `http://rebind.example:${upstreamPort}/`)
        expect(first.status).toBe(200)
        expect(first.body).toBe('from 127.0.0.2')
        const second = await get(app, `http://rebind.example:${upstreamPort}/`)
        expect(second.status).toBe(403)
        expect(JSON.parse(second.body)).toMatchObject({ code: 'AEGIS_ERR_TARGET_REFUSED' })
        expect(hits - before).toBe(1)
        expect(calls).toBeGreaterThanOrEqual(2)
      } finally {
        await app.close()
      }
    },
  )
})
