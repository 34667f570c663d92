/**
 * The gateway's seam for other engines (issue 15): one failure path every 502/503/504
 * goes through, which an engine's `onFailure` hook may take over; a response tap that
 * sees an upstream answer's body as it is forwarded; and the retry budget held by a
 * per-request lease, given back on every way out. Real upstreams on loopback, a real
 * `node:http` server in front of a route.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createEventBus } from '../src/kernel/events.js'
import { createProxyRoute, proxyRouteSchema, type GatewayDeps } from '../src/gateway/index.js'
import {
  type BodyTap,
  type ProxyRoute,
  type ProxyRouteOptions,
  type UpstreamFailure,
  type UpstreamHooks,
  type UpstreamResponse,
} from '../src/index.js'
import { createFailureAnswers } from '../src/kernel/callbacks.js'
import { RetryBudget } from '../src/gateway/retry.js'
import { refusedUrl, startUpstream, type Upstream } from '../../../test/helpers/upstream.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { sleep, waitFor } from '../../../test/helpers/wait.js'

failOnUncaught()

/** One refusing upstream, ejected at its first refused connection: a 502, then 503s (none left). */
const ejectingAtOnce = async (): Promise<Omit<ProxyRouteOptions, 'prefix'>> => ({
  upstreams: [await refusedUrl()],
  retry: false,
  healthCheck: false,
  breaker: false,
  outlier: { consecutiveConnectErrors: 1, maxEjectionPercent: 100 },
  panicThreshold: 0,
})

interface Gateway {
  readonly port: number
  readonly route: ProxyRoute
  /** Reasons of the rejections the gateway counted. */
  readonly counted: string[]
  /** What was logged at error level: [message, fields]. */
  readonly errors: [string | undefined, object][]
  /** Every `handle()` promise so far: settled once their response is. */
  readonly pending: Promise<void>[]
  close(): Promise<void>
}

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()))
})

/** A proxy route with `hooks`, in front of a plain `node:http` server. */
async function gateway(options: ProxyRouteOptions, hooks: UpstreamHooks = {}): Promise<Gateway> {
  const counted: string[] = []
  const errors: [string | undefined, object][] = []
  const logger = {
    info: () => undefined,
    warn: () => undefined,
    error: (obj: object, msg?: string) => void errors.push([msg, obj]),
  }
  const deps: GatewayDeps = {
    peerTrusted: () => false,
    clientKey: (req) => req.socket.remoteAddress ?? '',
    setBodyLimit: () => undefined,
    countRejection: (r) => void counted.push(r.reason),
    metrics: undefined,
    logger,
    breakers: undefined,
    events: createEventBus((err) => logger.error({ err }, 'event listener failed')),
    upstream: hooks,
    warn: () => undefined,
    failure: createFailureAnswers(logger),
  }
  const route = createProxyRoute(proxyRouteSchema.parse(options), deps)
  const pending: Promise<void>[] = []
  const server: Server = createServer((req, res) => {
    const handled = route.handle(req, res, req.url ?? '/')
    if (handled === false) res.writeHead(404).end()
    else pending.push(handled)
  })
  server.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const gw: Gateway = {
    port: (server.address() as AddressInfo).port,
    route,
    counted,
    errors,
    pending,
    async close() {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await route.close()
    },
  }
  open.push(gw)
  return gw
}

async function upstream(...args: Parameters<typeof startUpstream>): Promise<Upstream> {
  const u = await startUpstream(...args)
  open.push(u)
  return u
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** The response was cut before its end. */
  aborted: boolean
}

/** A GET on its own connection; resolves with what arrived, however the response ended. */
function get(
  gw: Gateway,
  path: string,
  headers: Record<string, string> = {},
  abortAfterMs?: number,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: gw.port, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      const done = (aborted: boolean): void =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), aborted })
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => done(false))
      res.on('aborted', () => done(true))
      res.on('error', () => done(true))
    })
    req.on('error', (err: NodeJS.ErrnoException) =>
      abortAfterMs !== undefined || err.code === 'ECONNRESET'
        ? resolve({ status: 0, headers: {}, body: Buffer.alloc(0), aborted: true })
        : reject(err),
    )
    if (abortAfterMs !== undefined) setTimeout(() => req.destroy(), abortAfterMs)
    req.end()
  })
}

const quiet = { healthCheck: false, outlier: false, breaker: false } as const

describe('one failure path: engines may take over every 502, 503 and 504', () => {
  it('a hook answers 200 from memory for an upstream that is down: the gateway writes and counts nothing', async () => {
    const failures: UpstreamFailure[] = []
    const gw = await gateway(
      { prefix: '/api', name: 'api', upstreams: [await refusedUrl()], retry: false, ...quiet },
      {
        onFailure(_req, res, failure) {
          failures.push(failure)
          res.writeHead(200, { 'content-type': 'text/plain', 'x-served': 'memory' }).end('from memory')
          return true
        },
      },
    )
    const r = await get(gw, '/api/users')
    expect([r.status, r.headers['x-served'], r.body.toString()]).toEqual([200, 'memory', 'from memory'])
    expect(failures).toHaveLength(1)
    const [failure] = failures as [UpstreamFailure]
    expect(failure).toMatchObject({ route: 'api', status: 502, rejection: { status: 502 } })
    expect(JSON.parse(failure.rejection.body)).toMatchObject({
      code: 'AEGIS_ERR_UPSTREAM_UNAVAILABLE',
    })
    expect((failure.error as NodeJS.ErrnoException).code).toBe('ECONNREFUSED')
    expect(gw.counted).toEqual([])
  })

  it('asks for every status the gateway fails with: 502 refused, 504 timed out, 503 none left (an async hook)', async () => {
    const stuck = await upstream('stuck', () => undefined) // accepts, never answers
    const statuses: number[] = []
    const hooks: UpstreamHooks = {
      async onFailure(_req, res, failure) {
        statuses.push(failure.status)
        await sleep(10)
        res.writeHead(200).end(`ghost of a ${failure.status}`)
        return true
      },
    }
    const timeouts = await gateway(
      { prefix: '/t', upstreams: [stuck.url], timeouts: { headers: 200 }, retry: false, ...quiet },
      hooks,
    )
    expect((await get(timeouts, '/t/x')).body.toString()).toBe('ghost of a 504')
    // One refused connection ejects the only upstream: the next request has none left.
    const ejecting = await gateway({ prefix: '/e', ...(await ejectingAtOnce()) }, hooks)
    expect((await get(ejecting, '/e/x')).body.toString()).toBe('ghost of a 502')
    expect((await get(ejecting, '/e/x')).body.toString()).toBe('ghost of a 503')
    expect(statuses).toEqual([504, 502, 503])
    expect([...timeouts.counted, ...ejecting.counted]).toEqual([])
  })

  it('a hook that throws, rejects or says no leaves the answer to the gateway: its own 502/503, counted once, logged', async () => {
    let mode: 'throw' | 'reject' | 'no' = 'throw'
    const gw = await gateway(
      { prefix: '/api', ...(await ejectingAtOnce()) },
      {
        onFailure() {
          if (mode === 'throw') throw new Error('ghost store down')
          if (mode === 'reject') return Promise.reject(new Error('ghost store slow'))
          return false
        },
      },
    )
    const first = await get(gw, '/api/x') // refused: 502, and the upstream is ejected
    mode = 'reject'
    const second = await get(gw, '/api/x') // none left: 503
    mode = 'no'
    const third = await get(gw, '/api/x')
    expect([first.status, second.status, third.status]).toEqual([502, 503, 503])
    expect(first.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(JSON.parse(second.body.toString())).toMatchObject({ code: 'AEGIS_ERR_NO_UPSTREAM' })
    expect(second.headers['retry-after']).toBe('1')
    expect(gw.counted).toEqual(['upstream-unavailable', 'no-upstream', 'no-upstream'])
    expect(gw.errors.map(([msg, obj]) => [msg, (obj as { err: Error }).err.message])).toEqual([
      ['upstream onFailure hook failed', 'ghost store down'],
      ['upstream onFailure hook failed', 'ghost store slow'],
    ])
  })

  it('never answers twice: a hook that answered but says no is believed; one that gave up half-way has its response cut', async () => {
    let mode: 'whole' | 'half' = 'whole'
    const gw = await gateway(
      { prefix: '/api', upstreams: [await refusedUrl()], retry: false, ...quiet },
      {
        async onFailure(_req, res) {
          if (mode === 'whole') {
            res.writeHead(200, { 'content-length': '5' }).end('whole')
            return false
          }
          res.writeHead(200, { 'content-length': '100' })
          res.write('half')
          await sleep(20)
          throw new Error('lost the rest')
        },
      },
    )
    const whole = await get(gw, '/api/x')
    expect([whole.status, whole.body.toString(), whole.aborted]).toEqual([200, 'whole', false])
    mode = 'half'
    const half = await get(gw, '/api/x')
    expect([half.status, half.body.toString(), half.aborted]).toEqual([200, 'half', true])
    expect(gw.counted).toEqual([])
    await Promise.all(gw.pending)
  })

  it('a client that left gets nothing: no hook is asked for it, and a hook that answers late writes nothing', async () => {
    const asked: string[] = []
    const gw = await gateway(
      // One connection: the first request holds it (its upstream never answers) while the second waits.
      {
        prefix: '/api',
        upstreams: [(await upstream('stuck', () => undefined)).url],
        connections: 1,
        timeouts: { headers: 500 },
        retry: false,
        ...quiet,
      },
      {
        onFailure(req) {
          asked.push(req.url ?? '')
          return false
        },
      },
    )
    const first = get(gw, '/api/first')
    await sleep(50)
    // Leaves while waiting for the connection: that wait fails (503), for a client no longer there.
    expect((await get(gw, '/api/second', {}, 100)).aborted).toBe(true)
    expect((await first).status).toBe(504)
    await Promise.all(gw.pending)
    expect(asked).toEqual(['/api/first'])
    expect(gw.counted).toEqual(['upstream-timeout'])

    // Gone while the hook works on its answer: the gateway's fallback is not written either.
    let destroyed: boolean | undefined
    const slow = await gateway(
      { prefix: '/api', upstreams: [await refusedUrl()], retry: false, ...quiet },
      {
        async onFailure(_req, res) {
          await sleep(200)
          destroyed = res.destroyed
          return false
        },
      },
    )
    expect((await get(slow, '/api/x', {}, 50)).aborted).toBe(true)
    await waitFor('the hook to answer', () => destroyed !== undefined)
    await Promise.all(slow.pending)
    expect(destroyed).toBe(true)
    expect(slow.counted).toEqual([])
  })
})

describe('response tap', () => {
  /** A tap that keeps what it is given. */
  const recorder = () => {
    const seen: { responses: UpstreamResponse[]; chunks: Buffer[]; ends: boolean[] } = {
      responses: [],
      chunks: [],
      ends: [],
    }
    const hooks: UpstreamHooks = {
      onResponse(_req, response) {
        seen.responses.push(response)
        return {
          chunk: (data) => void seen.chunks.push(Buffer.from(data)),
          end: (complete) => void seen.ends.push(complete),
        }
      },
    }
    return { seen, hooks }
  }

  /** Answers `parts` one write at a time (chunked), 10 ms apart. */
  const streaming = (parts: string[]) =>
    upstream('stream', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'stream' })
      let i = 0
      const next = (): void => {
        if (i === parts.length) return void res.end()
        res.write(parts[i++])
        setTimeout(next, 10)
      }
      next()
    })

  it('sees every chunk the client got, in order, then end(true) once; told the status and the upstream fields', async () => {
    const parts = ['alpha,', 'beta,', 'x'.repeat(100_000), ',gamma']
    const up = await streaming(parts)
    const { seen, hooks } = recorder()
    const gw = await gateway({ prefix: '/api', name: 'api', upstreams: [up.url], ...quiet }, hooks)
    const r = await get(gw, '/api/doc')
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe(parts.join(''))
    await Promise.all(gw.pending)
    expect(Buffer.concat(seen.chunks).equals(r.body)).toBe(true)
    expect(seen.ends).toEqual([true])
    expect(seen.responses).toHaveLength(1)
    const [response] = seen.responses as [UpstreamResponse]
    expect(response).toMatchObject({ route: 'api', status: 200 })
    // As received: hop-by-hop fields included.
    expect(response.headers['x-upstream']).toBe('stream')
    expect(response.headers['transfer-encoding']).toBe('chunked')
  })

  it('end(false) once when the upstream resets mid-body, or the client leaves', async () => {
    const resetting = await upstream('reset', (_req, res) => {
      res.writeHead(200, { 'content-length': '1000' })
      res.write('first part')
      setTimeout(() => res.socket?.destroy(), 50)
    })
    const { seen, hooks } = recorder()
    const gw = await gateway({ prefix: '/api', upstreams: [resetting.url], retry: false, ...quiet }, hooks)
    const r = await get(gw, '/api/doc')
    expect([r.status, r.aborted, r.body.toString()]).toEqual([200, true, 'first part'])
    await Promise.all(gw.pending)
    expect(Buffer.concat(seen.chunks).toString()).toBe('first part')
    expect(seen.ends).toEqual([false])

    // A client that leaves mid-body cuts the answer for the tap too.
    const endless = await upstream('endless', (_req, res) => {
      res.writeHead(200)
      const timer = setInterval(() => res.write('more '), 10)
      res.on('close', () => clearInterval(timer))
    })
    const left = recorder()
    const gw2 = await gateway({ prefix: '/api', upstreams: [endless.url], ...quiet }, left.hooks)
    expect((await get(gw2, '/api/doc', {}, 100)).aborted).toBe(true)
    await waitFor('the tap to end', () => left.seen.ends.length > 0)
    await Promise.all(gw2.pending)
    expect(left.seen.ends).toEqual([false])
  })

  it('a tap that throws is dropped for that answer and logged once; the client still gets all of it', async () => {
    const parts = ['one,', 'two,', 'three,', 'four']
    const up = await streaming(parts)
    const chunks: string[] = []
    const ends: boolean[] = []
    let mode: 'tap' | 'hook' = 'tap'
    const gw = await gateway(
      { prefix: '/api', upstreams: [up.url], ...quiet },
      {
        onResponse(): BodyTap {
          if (mode === 'hook') throw new Error('no tap today')
          return {
            chunk(data) {
              chunks.push(data.toString())
              if (chunks.length === 2) throw new Error('learner full')
            },
            end(complete) {
              ends.push(complete)
              throw new Error('and broken')
            },
          }
        },
      },
    )
    const r = await get(gw, '/api/doc')
    expect([r.status, r.aborted, r.body.toString()]).toEqual([200, false, parts.join('')])
    await Promise.all(gw.pending)
    expect(chunks).toEqual(['one,', 'two,'])
    expect(ends).toEqual([false]) // told the body it saw was cut short, once
    expect(gw.errors.map(([msg, obj]) => [msg, (obj as { err: Error }).err.message])).toEqual([
      ['upstream response tap failed', 'learner full'],
    ])
    mode = 'hook'
    const again = await get(gw, '/api/doc')
    expect(again.body.toString()).toBe(parts.join(''))
    expect(gw.errors.map(([, obj]) => (obj as { err: Error }).err.message)).toEqual([
      'learner full',
      'no tap today',
    ])
  })

  it('never taps an answer held back for a retry, only the one the client gets', async () => {
    const tries = new Set<string>()
    const flaky = await upstream('flaky', (req, res) => {
      const id = req.headers['x-request-id'] as string
      if (!tries.has(id)) {
        tries.add(id)
        res.writeHead(503).end('busy')
        return
      }
      res.end('served')
    })
    const { seen, hooks } = recorder()
    const gw = await gateway(
      { prefix: '/api', upstreams: [flaky.url], retry: { backoff: { base: 0, max: 0 } }, ...quiet },
      hooks,
    )
    const r = await get(gw, '/api/doc', { 'x-request-id': 'held-1' })
    expect([r.status, r.body.toString()]).toEqual([200, 'served'])
    await Promise.all(gw.pending)
    expect(flaky.seen).toHaveLength(2)
    expect(seen.responses.map((x) => x.status)).toEqual([200])
    expect(Buffer.concat(seen.chunks).toString()).toBe('served')
    expect(seen.ends).toEqual([true])
  })
})

describe("an upstream's own 5xx, offered to replace", () => {
  /** An upstream answering 500 with a body of `bytes` (in 64 KiB writes), or 200 at `/ok`. */
  const failing = (bytes: number) =>
    upstream('five-hundred', (req, res) => {
      if (req.url === '/ok') return void res.end('fine')
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': String(bytes) })
      const chunk = Buffer.alloc(64 * 1024, 'e')
      let left = bytes
      const more = (): void => {
        while (left > 0) {
          const n = Math.min(left, chunk.length)
          left -= n
          if (!res.write(chunk.subarray(0, n))) return void res.once('drain', more)
        }
        res.end()
      }
      more()
    })
  const route = (url: string): ProxyRouteOptions => ({
    prefix: '/api',
    upstreams: [url],
    retry: false,
    breaker: false,
  })

  it('answers in its place at once (sync), or after a while (async) with the body still streaming', async () => {
    const up = await failing(1024 * 1024)
    const seen: UpstreamResponse[] = []
    for (const slow of [false, true]) {
      const gw = await gateway(route(up.url), {
        replace(_req, res, response) {
          seen.push(response)
          const answer = (): boolean => (res.writeHead(200).end('stood in'), true)
          return slow ? sleep(50).then(answer) : answer()
        },
      })
      const r = await get(gw, '/api/x')
      expect([r.status, r.body.toString(), r.aborted]).toEqual([200, 'stood in', false])
      expect(gw.counted).toEqual([])
      await Promise.all(gw.pending)
    }
    expect(seen.map((r) => [r.status, r.headers['content-length'], r.route, r.config.prefix])).toEqual([
      [500, String(1024 * 1024), '/api', '/api'],
      [500, String(1024 * 1024), '/api', '/api'],
    ])
  })

  it('relays the whole answer when the hook says no, throws or rejects — what arrived meanwhile included', async () => {
    const bytes = 1024 * 1024
    const up = await failing(bytes)
    const hooks: NonNullable<UpstreamHooks['replace']>[] = [
      () => false,
      () => {
        throw new Error('ghost broke')
      },
      () => sleep(100).then(() => false),
      () => sleep(100).then(() => Promise.reject(new Error('ghost store down'))),
    ]
    for (const replace of hooks) {
      const gw = await gateway(route(up.url), { replace })
      const r = await get(gw, '/api/x')
      expect([r.status, r.body.length, r.aborted]).toEqual([500, bytes, false])
      expect(r.body.every((b) => b === 0x65)).toBe(true)
      // A 2xx is not offered.
      expect((await get(gw, '/api/ok')).body.toString()).toBe('fine')
    }
  })

  it('lets a client that leaves while the hook decides go, and the upstream with it', async () => {
    const up = await failing(1024 * 1024)
    let answered: boolean | undefined
    const gw = await gateway(route(up.url), {
      async replace(_req, res) {
        await sleep(150)
        answered = !res.destroyed
        return false
      },
    })
    const r = await get(gw, '/api/x', {}, 50)
    expect(r.aborted).toBe(true)
    await Promise.all(gw.pending)
    await waitFor('the hook to decide', () => answered !== undefined)
    expect(answered).toBe(false)
  })
})

describe('retry budget lease', () => {
  it('holds a retry slot from its decision to the end of its attempt, and gives everything back once', () => {
    const exhausted: number[] = []
    const budget = new RetryBudget(0, 1, () => void exhausted.push(budget.inFlight))
    const a = budget.lease()
    const b = budget.lease()
    expect(budget.active).toBe(2)
    expect(a.take()).toBe(true) // a slot for a's second attempt
    expect(b.take()).toBe(false) // the budget holds one retry in flight
    expect(exhausted).toEqual([1])
    a.nextAttempt() // the retry runs, holding it
    a.attemptEnded() // and ends: the slot goes back
    expect(budget.inFlight).toBe(0)
    expect(b.take()).toBe(true)
    b.release() // a slot taken but never used goes back too
    b.release() // once
    expect([budget.inFlight, budget.active]).toEqual([0, 1])
    expect(b.take()).toBe(false) // a released lease takes nothing (and is no exhaustion)
    expect(exhausted).toEqual([1])
    // A retry deciding the next one while it runs (a held 5xx) holds two for a moment.
    expect(a.take()).toBe(true)
    a.nextAttempt()
    budget.release() // (what another lease gives back does not concern this one)
    a.release()
    expect([budget.inFlight, budget.active]).toEqual([0, 0])
  })

  /**
   * One upstream that answers a request by its id: `flaky-*` 503 the first time, then 200;
   * `always-*` 503 every time; `slow-*` 503 with Retry-After: 1; `reset-*` a cut connection the
   * first time; `dead-*` a cut connection every time; anything else 200.
   */
  const byId = async () => {
    const tries = new Map<string, number>()
    const up = await upstream('by-id', (req, res) => {
      const id = String(req.headers['x-request-id'])
      const n = (tries.get(id) ?? 0) + 1
      tries.set(id, n)
      const kind = id.slice(0, id.indexOf('-'))
      if ((kind === 'reset' && n === 1) || kind === 'dead') return void res.socket?.destroy()
      if ((kind === 'flaky' && n === 1) || kind === 'always') return void res.writeHead(503).end()
      if (kind === 'slow') return void res.writeHead(503, { 'retry-after': '1' }).end()
      res.end('ok')
    })
    return { up, tries }
  }

  it.each([
    // budget; what a lone request needing one retry gets when every slot and count came back, what
    // a request whose connection is cut once gets, and what a client gets that leaves after 100 ms
    // while its retry waits out a Retry-After of 1 s
    // …and how many attempts a request whose connection is always cut makes
    ['one retry in flight at most (0%, at least 1)', { percent: 0, minConcurrent: 1 }, 200, 'ok', 'left', 3],
    [
      'half the requests in flight (50%, at least 0)',
      { percent: 50, minConcurrent: 0 },
      503,
      'from memory',
      503,
      1,
    ],
  ] as const)(
    'comes back whole after every way a request ends: %s',
    async (_name, budget, probeStatus, afterReset, afterSlow, deadAttempts) => {
      const { up, tries } = await byId()
      let ids = 0
      const id = (kind: string): { 'x-request-id': string } => ({ 'x-request-id': `${kind}-${++ids}` })
      const gw = await gateway(
        {
          prefix: '/api',
          upstreams: [up.url],
          retry: { attempts: 2, budget, backoff: { base: 1, max: 1 } },
          ...quiet,
        },
        {
          // Failures are served from memory, after a while: the lease is back before that.
          async onFailure(_req, res) {
            await sleep(100)
            res.writeHead(200).end('from memory')
            return true
          },
        },
      )
      /** A lone request that needs one retry: 200 when its retry got a slot, the upstream's 503 otherwise. */
      const probe = async (): Promise<number> => (await get(gw, '/api/x', id('flaky'))).status
      const settled = async (): Promise<number> => {
        await Promise.all(gw.pending)
        return probe()
      }
      expect(await probe()).toBe(probeStatus)
      // Answered at the first attempt.
      expect((await get(gw, '/api/x', id('plain'))).status).toBe(200)
      expect(await settled()).toBe(probeStatus)
      // Retries spent on held 503s (or refused a slot): the last 503 is relayed.
      expect((await get(gw, '/api/x', id('always'))).status).toBe(503)
      expect(await settled()).toBe(probeStatus)
      // A cut connection, retried with a slot taken after its attempt (not while it ran).
      expect((await get(gw, '/api/x', id('reset'))).body.toString()).toBe(afterReset)
      expect(await settled()).toBe(probeStatus)
      // The client leaves while its retry waits out the upstream's Retry-After.
      const slow = await get(gw, '/api/x', id('slow'), 100)
      expect(slow.aborted ? 'left' : slow.status).toBe(afterSlow)
      expect(await settled()).toBe(probeStatus)
      // Failed for good and served by a hook: the slots are back while the hook still works.
      const dead = id('dead')
      const served = get(gw, '/api/x', dead)
      await sleep(50)
      expect(await probe()).toBe(probeStatus)
      expect((await served).body.toString()).toBe('from memory')
      // Each retry's slot went back when its attempt ended: the next retry could take it.
      expect(tries.get(dead['x-request-id'])).toBe(deadAttempts)
      expect(await settled()).toBe(probeStatus)
    },
  )
})
