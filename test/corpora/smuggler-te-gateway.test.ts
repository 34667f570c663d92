/**
 * The desync test of the gateway: every Transfer-Encoding gadget of
 * defparam/smuggler (test/corpora/data/smuggler-te-mutations, MIT, Copyright (c)
 * 2020 Evan Custodio; licence in the folder) sent through a gateway route on
 * Express, Fastify and Koa to a raw TCP upstream that records the bytes it gets.
 *
 * The request is smuggler's shape: `POST /upload?g=<n>` with the gadget line, a
 * Content-Length of 5 and the body `0\r\n\r\n`, then a pipelined `GET /second`.
 * Each gadget must be refused (400, nothing reaches the upstream), or reach it
 * as exactly one POST whose only framing header is the gateway's own
 * `content-length: 5` with the 5 body bytes, and the GET as a request of its own.
 * No header named like Transfer-Encoding (`Transfer_Encoding`, `Transfer-Encoding `
 * …) and no name with `_` may reach the upstream.
 */
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { gateways, type GatewayApp } from '../conformance/gateway-apps.js'
import { gadgets, wire } from './smuggler.js'
import { exchange, pool } from './support.js'

interface Seen {
  method: string
  target: string
  headers: [string, string][]
  body: string
}

/**
 * An upstream that parses what arrives only as far as it must to answer: a
 * head, then exactly Content-Length body bytes. Anything else (a chunked or
 * doubly framed request) is recorded as it is and the connection closed.
 */
function recordingUpstream(): { server: Server; seen: Seen[]; broken: string[] } {
  const seen: Seen[] = []
  const broken: string[] = []
  const server = createServer((socket: Socket) => {
    let buf = ''
    socket.on('error', () => socket.destroy())
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1')
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const [line = '', ...rest] = buf.slice(0, end).split('\r\n')
        const [method = '', target = ''] = line.split(' ')
        const headers = rest.map((h): [string, string] => {
          const colon = h.indexOf(':')
          return [h.slice(0, colon), h.slice(colon + 1).trim()]
        })
        const framing = headers.filter(([n]) => /^(content-length|transfer-encoding)$/i.test(n))
        if (framing.length > 1 || framing.some(([n]) => /^transfer-encoding$/i.test(n))) {
          broken.push(buf)
          socket.destroy()
          return
        }
        const length = framing.length === 1 ? Number(framing[0]?.[1]) : 0
        if (buf.length < end + 4 + length) return
        seen.push({ method, target, headers, body: buf.slice(end + 4, end + 4 + length) })
        buf = buf.slice(end + 4 + length)
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok')
      }
    })
  })
  return { server, seen, broken }
}

const TE_LIKE = /t\W*r\W*a\W*n\W*s\W*f\W*e\W*r\W*.?\W*e\W*n\W*c\W*o\W*d\W*i\W*n\W*g/i

describe.each(gateways)('smuggler gadgets through the gateway on %s', (_name, createGateway) => {
  const upstream = recordingUpstream()
  let app: GatewayApp

  beforeAll(async () => {
    upstream.server.listen(0, '127.0.0.1')
    await once(upstream.server, 'listening')
    const port = (upstream.server.address() as AddressInfo).port
    app = await createGateway([{ prefix: '/', upstreams: [`http://127.0.0.1:${port}`], retry: false }], {
      limiter: false,
    })
  })
  afterAll(async () => {
    await app.close()
    upstream.server.close()
  })

  it('each of the 1,768 is refused, or reaches the upstream as one request framed by the gateway', async () => {
    const verdicts = await pool(gadgets, 20, async (g, n) => {
      const res = await exchange(app.port, wire(g, n), {
        enough: (r) => r.length >= 2 || r[0]?.status === 400,
      })
      const first = res.responses[0]
      if (first === undefined) return `${g.name}: no response`
      if (first.status === 400) return 'refused'
      if (first.status !== 200 || res.responses[1]?.status !== 200)
        return `${g.name}: answered ${res.responses.map((r) => r.status).join(', ')}`
      return 'forwarded'
    })
    const problems = verdicts.filter((v) => v !== 'refused' && v !== 'forwarded')
    expect(problems).toEqual([])
    expect(upstream.broken).toEqual([])

    const forwarded = new Set(verdicts.flatMap((v, n) => (v === 'forwarded' ? [n] : [])))
    for (const s of upstream.seen) {
      const n = Number(/[?&]g=(\d+)/.exec(s.target)?.[1])
      expect(forwarded.has(n), `a refused gadget reached the upstream: ${s.method} ${s.target}`).toBe(true)
      for (const [name] of s.headers) {
        expect(name, `${gadgets[n]?.name}: forwarded ${JSON.stringify(name)}`).not.toMatch(/_/)
        expect(name, `${gadgets[n]?.name}: forwarded ${JSON.stringify(name)}`).not.toMatch(TE_LIKE)
        expect(name).toMatch(/^[!#$%&'*+\-.^`|~0-9A-Za-z]+$/)
      }
    }
    // Exactly one POST and one GET per forwarded gadget; the POST with the gateway's framing.
    for (const n of forwarded) {
      const mine = upstream.seen.filter((s) => Number(/[?&]g=(\d+)/.exec(s.target)?.[1]) === n)
      expect(mine.map((s) => `${s.method} ${s.target}`)).toEqual([
        `POST /upload?g=${n}`,
        `GET /second?g=${n}`,
      ])
      const post = mine[0] as Seen
      expect(post.headers.filter(([h]) => /^content-length$/i.test(h))).toEqual([['content-length', '5']])
      expect(post.body).toBe('0\r\n\r\n')
      expect((mine[1] as Seen).body).toBe('')
    }
    // The six Node lets through as Content-Length (the corpus README) are forwarded — so the
    // checks above are not vacuous — `Transfer_Encoding` without its header; all others refused.
    expect([...forwarded].map((n) => gadgets[n]?.name).sort()).toEqual(
      ['contentEnc', 'underjoin1', 'xprespace-09', 'xprespace-20', 'xprespace-a0', 'xprespace-ff'].sort(),
    )
    const underjoin = upstream.seen.find(
      (s) => s.target === `/upload?g=${gadgets.findIndex((g) => g.name === 'underjoin1')}`,
    )
    expect(underjoin?.headers.map(([h]) => h.toLowerCase())).not.toContain('transfer_encoding')
  }, 120_000)
})
