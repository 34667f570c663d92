/**
 * Replays every Transfer-Encoding obfuscation gadget of defparam/smuggler against
 * Aegis on Express, Fastify and Koa, over real sockets.
 *
 * Corpus: test/corpora/data/smuggler-te-mutations/mutations.jsonl — the gadget lines
 * rendered from smuggler's configs/default.py, doubles.py and exhaustive.py
 * (https://github.com/defparam/smuggler, commit 2be871e6). Licence: MIT,
 * Copyright (c) 2020 Evan Custodio; the text is in the folder's LICENSE file.
 *
 * The request shape is the corpus README's, aimed at the apps' byte-counting
 * route (POST /upload, application/octet-stream, answers `{"bytes": n}`):
 *
 *   POST /upload HTTP/1.1 / <gadget> / Host / Content-Type / Content-Length: 5
 *   body `0\r\n\r\n`, then a pipelined `GET /second` with Connection: close
 *
 * Each gadget must either be refused (one 400, then close: the pipelined request
 * is never read) or be framed by Content-Length: /upload saw exactly 5 bytes and
 * GET /second was parsed as the next request (the apps have no such route: 404).
 * A chunked reading would show as `{"bytes": 0}` with `0\r\n\r\n` left over.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adapters, type TestApp } from '../conformance/apps.js'
import { gadgets, wire } from './smuggler.js'
import { exchange, pool, type Exchange } from './support.js'

const CONFIGS = ['default', 'doubles', 'exhaustive'] as const
const CONCURRENCY = 20

/** 'refused', 'content-length', or a description of what went wrong. */
function judge(res: Exchange): string {
  const [first, second, ...more] = res.responses
  if (first === undefined) return `no response (closed=${res.closed}, ${res.raw.length} bytes)`
  if (first.status === 400) {
    if (second !== undefined) return `400 followed by a second response (${second.status})`
    if (!res.closed) return '400 but the connection stayed open'
    return 'refused'
  }
  if (first.status !== 200) return `first response ${first.status}`
  let bytes: unknown
  try {
    bytes = (JSON.parse(first.body.toString('utf8')) as { bytes?: unknown }).bytes
  } catch {
    return `unparseable /upload body ${JSON.stringify(first.body.toString('latin1'))}`
  }
  if (bytes !== 5) return `/upload read ${String(bytes)} body bytes (expected 5: Content-Length framing)`
  if (second === undefined) return 'no response to the pipelined GET /second'
  if (second.status !== 404) return `GET /second answered ${second.status} (expected the apps' 404)`
  if (more.length > 0 || res.trailing.length > 0) return `extra bytes after two responses`
  return 'content-length'
}

it('the corpus holds 1,768 gadgets: 134 default, 966 doubles, 668 exhaustive', () => {
  expect(gadgets).toHaveLength(1768)
  expect(CONFIGS.map((c) => gadgets.filter((g) => g.config === c).length)).toEqual([134, 966, 668])
})

describe.each(adapters)('%s with aegis() defaults', (_name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make()
  })
  afterAll(() => app.close())

  // Control: the oracle is not vacuous. A plainly chunked request of the same shape
  // (no Content-Length) is read as chunked, and the judge says so.
  it('control: a real chunked request of the same shape is reported as not Content-Length framed', async () => {
    const chunked =
      'POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: localhost\r\n' +
      'Content-Type: application/octet-stream\r\n\r\n0\r\n\r\n' +
      'GET /second HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    expect(judge(await exchange(app.port, chunked))).toMatch(/^\/upload read 0 body bytes/)
  })

  it.each(CONFIGS)(
    'every %s gadget is refused with 400 or framed by Content-Length (5 body bytes)',
    async (config) => {
      const batch = gadgets.filter((g) => g.config === config)
      const verdicts = await pool(batch, CONCURRENCY, async (g) => judge(await exchange(app.port, wire(g))))
      const bad = batch
        .map((g, i) => ({ name: g.name, gadget: g.gadget_hex, verdict: verdicts[i] }))
        .filter((v) => v.verdict !== 'refused' && v.verdict !== 'content-length')
      expect(bad).toEqual([])
      // Aegis may refuse more than Node, never less: what Node refused stays refused.
      const unrefused = batch
        .filter((g, i) => g.node20_20_2 === 'rejected-400' && verdicts[i] !== 'refused')
        .map((g) => g.name)
      expect(unrefused).toEqual([])
    },
    60_000,
  )
})
