/**
 * Property: whatever a client sends on one connection — pipelined requests,
 * chunked bodies within and past the limit, slow answers, a user callback that
 * throws, a client that vanishes mid-request — the process sees no uncaught
 * exception and every answer reaches the request it answers, in order. fast-check
 * drives random sequences against each adapter over a real socket; each request
 * carries an id its answer must echo, or a status only its own request can get.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { converse, parseResponses, writeChunked } from '../helpers/raw-http.js'
import { failOnUncaught } from '../helpers/uncaught.js'
import { adapters, type TestApp } from './apps.js'

const LIMIT = 64 * 1024

type Step =
  | { kind: 'user'; id: number }
  | { kind: 'slow'; id: number }
  | { kind: 'upload'; bytes: number }
  | { kind: 'oversized' }
  | { kind: 'throws' }
  | { kind: 'vanish'; bytes: number }

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('user' as const), id: fc.nat(1e6) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('slow' as const), id: fc.nat(1e6) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('upload' as const), bytes: fc.integer({ min: 0, max: LIMIT }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('oversized' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('throws' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('vanish' as const),
      bytes: fc.integer({ min: 0, max: 2 * LIMIT }),
    }),
  },
)

const head = (method: string, path: string, extra = ''): string =>
  `${method} ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`
const CHUNKED = 'Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n'

/** What each step's own answer looks like; `undefined`: no answer (the client left). */
const expected = (s: Step): ((r: { status: number; body: string }) => void) | undefined => {
  switch (s.kind) {
    case 'user':
      return (r) => {
        expect(r.status).toBe(200)
        expect(JSON.parse(r.body)).toMatchObject({ id: String(s.id) })
      }
    case 'slow':
      return (r) => expect(r).toMatchObject({ status: 200, body: `slow ${s.id}` })
    case 'upload':
      return (r) => expect(r).toMatchObject({ status: 200, body: JSON.stringify({ bytes: s.bytes }) })
    // A client that leaves after passing the limit may have had its 413 first.
    case 'vanish':
    case 'oversized':
      if (s.kind === 'vanish' && s.bytes <= LIMIT) return undefined
      return (r) => {
        expect(r.status).toBe(413)
        expect(JSON.parse(r.body)).toMatchObject({ code: 'AEGIS_ERR_BODY_TOO_LARGE' })
      }
    case 'throws':
      return (r) => {
        expect(r.status).toBe(500)
        expect(JSON.parse(r.body)).toMatchObject({ code: 'AEGIS_ERR_CALLBACK_FAILED' })
      }
  }
}

/** Send the steps on one connection; the last answered step asks the server to close. */
async function play(app: TestApp, steps: readonly Step[]): Promise<string> {
  // Past an oversized body the server closes; past a vanishing client nothing is sent.
  const end = steps.findIndex((s) => s.kind === 'oversized' || s.kind === 'vanish')
  const sent = end < 0 ? steps : steps.slice(0, end + 1)
  const { raw } = await converse(
    app.port,
    async (socket) => {
      for (const [i, s] of sent.entries()) {
        const close = i === sent.length - 1 ? 'Connection: close\r\n' : ''
        switch (s.kind) {
          case 'user':
            socket.write(head('GET', `/users/${s.id}`, close))
            break
          case 'slow':
            socket.write(head('GET', `/slow?id=${s.id}`, close))
            break
          case 'throws':
            socket.write(head('GET', '/', `x-boom: 1\r\n${close}`))
            break
          case 'upload':
            socket.write(head('POST', '/upload', CHUNKED + close))
            await writeChunked(socket, s.bytes, 4096)
            break
          case 'oversized':
            socket.write(head('POST', '/upload', CHUNKED))
            await writeChunked(socket, LIMIT * 3, 16 * 1024)
            break
          case 'vanish': {
            socket.write(head('POST', '/upload', CHUNKED))
            const frame = Buffer.alloc(s.bytes, 98)
            socket.write(`${s.bytes.toString(16)}\r\n`)
            socket.write(frame)
            // Give the earlier answers a moment, then leave mid-body.
            await new Promise((resolve) => setTimeout(resolve, 400))
            socket.destroy()
            break
          }
        }
      }
    },
    { timeoutMs: 5000 },
  )
  return raw
}

const uncaught = failOnUncaught()

describe.each(adapters)('%s: random sequences on one connection', (_name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make({
      validator: { maxBodyBytes: LIMIT },
      limiter: {
        points: 1_000_000,
        key: (req) => {
          if (req.headers['x-boom'] !== undefined) throw new Error('malformed token')
          return undefined
        },
      },
      logger: { info() {}, warn() {}, error() {} },
    })
  })
  afterAll(() => app.close())

  it('never crashes, and answers each request on its own response, in order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), async (steps) => {
        const raw = await play(app, steps)
        // Steps past an oversized body (the server closes) or a vanishing client are never sent.
        const end = steps.findIndex((s) => s.kind === 'oversized' || s.kind === 'vanish')
        const due = (end < 0 ? steps : steps.slice(0, end + 1)).map(expected)
        const checks = due.filter((c) => c !== undefined)
        const responses = parseResponses(raw)
        if (steps[end]?.kind === 'vanish') {
          // The client left: the answers it got are a prefix of the ones that could be due.
          expect(responses.length).toBeLessThanOrEqual(checks.length)
        } else expect(responses).toHaveLength(checks.length)
        responses.forEach((r, i) => checks[i]?.(r))
        expect(uncaught).toEqual([])
      }),
      { numRuns: 25, interruptAfterTimeLimit: 60_000 },
    )
    // Still serving.
    expect((await fetch(`${app.url}/health`)).status).toBe(200)
  }, 90_000)
})
