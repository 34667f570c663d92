/**
 * Path-traversal and CRLF-injection lists from FuzzDB, replayed against Aegis on
 * Express, Fastify, Koa and plain node:http over real sockets.
 *
 * Attribution (required by the licence): this test uses data from FuzzDB,
 * https://github.com/fuzzdb-project/fuzzdb, Copyright (c) 2010-2019 Adam Muntner
 * and contributors, commit 5656ab25 — `attack/path-traversal/traversals-8-deep-exotic-encoding.txt`,
 * `attack/path-traversal/path-traversal-windows.txt` and
 * `attack/http-protocol/crlf-injection.txt`. Licensed under the New BSD licence and
 * Creative Commons Attribution 3.0 (http://creativecommons.org/licenses/by/3.0/legalcode);
 * the full terms are in test/corpora/data/fuzzdb-traversal-ssrf-crlf/_copyright.txt.
 * The files are read in place, unchanged.
 *
 * Traversal: every line (with `{FILE}` = etc/passwd; Windows lines under /static/)
 * is requested from an app whose catch-all route echoes `req.url`. Each request is
 * refused with 400 — by Aegis, or by the framework's own URL check — or reaches
 * the app unchanged, and then no decoding of what the app received has a `..`
 * segment. "Decoding" is this file's own oracle, independent of Aegis' code:
 * percent-decoding repeated to a fixed point, IIS `%uXXXX`, UTF-8 including
 * overlong forms (`%c0%ae`) and, laxly, a C0/C1 lead before an ASCII byte read the
 * two ways careless decoders do (`%c0%2e` masked is ".", `%c0%5c` without its lead
 * is "\"), NFKC folding (fullwidth `．`),
 * backslash read as slash, and a `;parameter` dropped from a segment (Tomcat).
 * Not decodings: the literal text `0x2e` (no server reads it as a dot) and `...` /
 * `....` segments (names, not parent references, on POSIX and in RFC 3986 §5.2.4).
 *
 * CRLF: each line is sent as `/redirect?next=<line>` (the app redirects to it) and
 * as `/<line>`. No response may carry a header line or a status line the payload
 * spells out; a 400 refusal is fine.
 */
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import Koa from 'koa'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createAegis, inspectPath } from '@aegis/core'
import { aegis as expressAegis } from '@aegis/express'
import { aegis as fastifyAegis } from '@aegis/fastify'
import { aegis as koaAegis } from '@aegis/koa'
import { readings, traversalReadings } from './decodings.js'
import { corpusLines, exchange, pool, type Exchange } from './support.js'

const DIR = 'fuzzdb-traversal-ssrf-crlf/'
const traversals = corpusLines(`${DIR}traversals-8-deep-exotic-encoding.txt`).map((l) =>
  l.replaceAll('{FILE}', 'etc/passwd'),
)
const windows = corpusLines(`${DIR}path-traversal-windows.txt`).map((l) =>
  l.startsWith('/') ? l : `/static/${l}`,
)
const crlf = corpusLines(`${DIR}crlf-injection.txt`)

// ---------------------------------------------------------------------------
// Echo apps: Aegis with defaults, a catch-all that echoes req.url, a redirect.

interface EchoApp {
  port: number
  close(): Promise<void>
}

const listen = async (server: Server): Promise<number> => {
  if (!server.listening) await once(server, 'listening')
  return (server.address() as AddressInfo).port
}

async function expressEcho(): Promise<EchoApp> {
  const app = express()
  const shield = expressAegis()
  app.use(shield)
  app.get('/redirect', (req, res) => res.redirect(typeof req.query.next === 'string' ? req.query.next : '/'))
  app.use((req, res) => {
    res.json({ url: req.originalUrl })
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), close: () => shield.close() }
}

async function fastifyEcho(): Promise<EchoApp> {
  const app = Fastify({ requestTimeout: 30_000 })
  await app.register(fastifyAegis)
  app.get<{ Querystring: { next?: string } }>('/redirect', (req, reply) =>
    reply.redirect(String(req.query.next)),
  )
  app.get('*', (req) => ({ url: req.raw.url }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
}

async function koaEcho(): Promise<EchoApp> {
  const app = new Koa()
  app.silent = true
  const shield = koaAegis()
  app.use(shield)
  app.use((ctx) => {
    if (ctx.path === '/redirect') return ctx.redirect(String(ctx.query.next))
    ctx.body = { url: ctx.req.url }
  })
  const server = app.listen(0, '127.0.0.1')
  shield.attach(server)
  return { port: await listen(server), close: () => shield.close() }
}

async function nodeEcho(): Promise<EchoApp> {
  const core = createAegis()
  const server = createServer(
    core.handler((req, res) => {
      const url = req.url ?? '/'
      const q = url.indexOf('?')
      if ((q < 0 ? url : url.slice(0, q)) === '/redirect') {
        const next = new URLSearchParams(q < 0 ? '' : url.slice(q + 1)).get('next') ?? '/'
        // encodeURI leaves no CR or LF; setHeader would refuse them (a throw: the handler's 500).
        res.writeHead(302, { location: encodeURI(next) })
        return res.end()
      }
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ url }))
    }),
  )
  core.attach(server)
  server.listen(0, '127.0.0.1')
  return { port: await listen(server), close: () => core.close() }
}

const echoApps = [
  ['express', expressEcho],
  ['fastify', fastifyEcho],
  ['koa', koaEcho],
  ['node', nodeEcho],
] as const

// ---------------------------------------------------------------------------
// The traversal oracle.

// ---------------------------------------------------------------------------

const get = (port: number, target: string): Promise<Exchange> =>
  exchange(port, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`, {
    timeoutMs: 3000,
  })

/** Problems with a traversal request's outcome; empty when it holds. */
function judgeTraversal(path: string, res: Exchange): string[] {
  const first = res.responses[0]
  if (first === undefined) return [`no response (closed=${res.closed})`]
  if (first.status === 400) return []
  if (first.status !== 200) return [`status ${first.status}: ${first.body.toString('latin1').slice(0, 200)}`]
  const { url } = JSON.parse(first.body.toString('utf8')) as { url: string }
  const problems: string[] = []
  if (url !== path) problems.push(`the app received ${JSON.stringify(url)}, not the path sent`)
  const bad = traversalReadings(url)
  if (bad.length > 0) problems.push(`admitted, and it reads as ${JSON.stringify(bad[0])}`)
  return problems
}

/** `Name: value` lines the payload would inject, once fully decoded. */
function injectedHeaders(payload: string): [string, string][] {
  const out: [string, string][] = []
  for (const reading of readings(payload.replace(/\\r/g, '\r').replace(/\\n/g, '\n'))) {
    for (const line of reading.split(/\r\n|\r|\n/).slice(1)) {
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line)
      if (m) out.push([(m[1] as string).toLowerCase(), m[2] as string])
    }
  }
  return out
}

/**
 * Problems with a CRLF request's outcome; empty when it holds. Framing is what
 * matters: the bytes must be exactly one response, whose head has one status line
 * and none of the payload's header lines. A body may quote the payload within its
 * declared length (Koa's redirect page echoes the target, HTML-escaped, CRLFs and
 * all): no client reads a response out of a Content-Length-framed body.
 */
function judgeCrlf(payload: string, res: Exchange): string[] {
  const problems: string[] = []
  if (res.responses.length !== 1) problems.push(`${res.responses.length} responses`)
  if (res.trailing.length > 0)
    problems.push(
      `${res.trailing.length} bytes after the response: ${JSON.stringify(res.trailing.toString('latin1').slice(0, 80))}`,
    )
  const raw = res.raw.toString('latin1')
  const head = raw.slice(0, raw.indexOf('\r\n\r\n') + 2)
  if ((head.match(/(^|\n)HTTP\/1\.[01] \d{3}/g) ?? []).length !== 1)
    problems.push('a second status line in the head')
  const injected = injectedHeaders(payload)
  for (const r of res.responses) {
    for (const [name, value] of r.headers) {
      if (name === 'contentlength' || name === 'contenttype')
        problems.push(`injected header ${name}: ${value}`)
      else if (injected.some(([n, v]) => n === name && v === value))
        problems.push(`injected header ${name}: ${value}`)
    }
  }
  return problems
}

it('the oracle reads the corpus encodings as traversals', () => {
  for (const p of [
    '/%2e%2e/etc/passwd',
    '/%252e%252e/etc/passwd',
    '/%%32%65%%32%65/etc/passwd',
    '/%c0%ae%c0%ae/etc/passwd',
    '/%c0%2e%c0%2e/etc/passwd',
    '/%e0%80%ae%e0%80%ae/etc/passwd',
    '/%uff0e%uff0e/etc/passwd',
    '/..%5cetc/passwd',
    '/..%c1%9cetc/passwd',
    '/..%c1%1cetc/passwd',
    '/..%c0%5c..%c0%5cetc/passwd',
    '/..%c0%2fetc/passwd',
    '/..;/etc/passwd',
    '/static/..\\..\\boot.ini',
  ])
    expect(traversalReadings(p), p).not.toEqual([])
  for (const p of ['/0x2e0x2e/etc/passwd', '/.../etc/passwd', '/static/C:/boot.ini', '/a..b/c', '/%2e/x'])
    expect(traversalReadings(p), p).toEqual([])
})

// Found by this corpus: Aegis admitted a C0/C1 lead before an escaped ASCII byte
// (fixed in packages/core/src/validator/path.ts).
it.each(['/%c0%2e%c0%2e/etc/passwd', '/..%c0%2fetc/passwd', '/..%c0%5c..%c0%5cetc/passwd', '/..%c1%1cetc'])(
  'inspectPath refuses the lax-decoder traversal %s',
  (path) => {
    expect(inspectPath(path)).toBe('traversal')
  },
)

it('the lists have the sizes the corpus README gives', () => {
  expect(traversals).toHaveLength(530)
  expect(windows).toHaveLength(6)
  expect(crlf).toHaveLength(20)
})

describe.each(echoApps)('%s with aegis() defaults', (_name, make) => {
  let app: EchoApp
  beforeAll(async () => {
    app = await make()
  })
  afterAll(() => app.close())

  it('control: a plain path reaches the echo route unchanged', async () => {
    expect(judgeTraversal('/static/a/b.txt', await get(app.port, '/static/a/b.txt'))).toEqual([])
    const res = await get(app.port, '/static/a/b.txt')
    expect(res.responses[0]?.status).toBe(200)
  })

  it('traversals-8-deep-exotic-encoding.txt: each line is refused with 400 or admitted without a `..`', async () => {
    const verdicts = await pool(traversals, 20, async (path) =>
      judgeTraversal(path, await get(app.port, path)),
    )
    const bad = traversals
      .map((path, i) => ({ path, problems: verdicts[i] }))
      .filter((v) => v.problems?.length)
    expect(bad).toEqual([])
  })

  it.each(windows)('path-traversal-windows.txt: %s', async (path) => {
    expect(judgeTraversal(path, await get(app.port, path))).toEqual([])
  })

  it.each(crlf)('crlf-injection.txt in a redirect target: %s', async (payload) => {
    expect(judgeCrlf(payload, await get(app.port, `/redirect?next=${payload}`))).toEqual([])
  })

  it.each(crlf)('crlf-injection.txt as the path: %s', async (payload) => {
    expect(judgeCrlf(payload, await get(app.port, `/${payload}`))).toEqual([])
  })
})
