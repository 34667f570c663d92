/**
 * The anomaly engine's batch of observations (one per event-loop turn): what it keeps of a
 * finished request, and its bound when a caller of `admit`/`observe` never yields.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis, type AegisOptions } from '../src/index.js'

const open: Aegis[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()))
})

const instance = (anomaly: Exclude<AegisOptions['anomaly'], false> = {}): Aegis => {
  const core = createAegis({ limiter: false, metrics: false, anomaly: { mode: 'observe', ...anomaly } })
  open.push(core)
  return core
}
/** What `createServer` would hand over, as far as Aegis reads it. */
const request = (address = '10.0.0.1'): IncomingMessage =>
  ({
    method: 'GET',
    url: '/page?x=1',
    httpVersion: '1.1',
    httpVersionMajor: 1,
    rawHeaders: ['Host', 'example.com', 'User-Agent', 'Mozilla/5.0 Firefox/128.0'],
    headers: { host: 'example.com', 'user-agent': 'Mozilla/5.0 Firefox/128.0' },
    socket: { remoteAddress: address },
  }) as unknown as IncomingMessage
const response = (statusCode = 200): ServerResponse =>
  ({
    statusCode,
    writableFinished: true,
    setHeader() {},
    getHeader() {},
    removeHeader() {},
    on() {},
  }) as unknown as ServerResponse
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('anomaly: the batch of a turn', () => {
  it('is taken at the end of the turn, and every 1,024 requests when the caller never yields', async () => {
    const core = instance()
    const res = response()
    for (let i = 0; i < 2500; i++) {
      const req = request()
      void core.admit(req)
      core.observe(req, res)
    }
    // Two full batches were taken on the caller's stack; the rest waits for the turn's end.
    expect(core.anomaly?.explain('10.0.0.1')?.requests).toBe(2048)
    await turn()
    expect(core.anomaly?.explain('10.0.0.1')?.requests).toBe(2500)
  })

  it('a request whose identity throws is not counted, and the ones after it are still taken', async () => {
    const core = instance({ identity: { header: 'x-user' } })
    // Only the engine reads `x-user` (its identity): there, and only there, this request throws.
    const broken = request()
    broken.headers = new Proxy(broken.headers, {
      get(target, name) {
        if (name === 'x-user') throw new Error('a broken request')
        return target[name as string]
      },
    })
    const res = response()
    void core.admit(broken)
    core.observe(broken, res) // the first of its turn: nothing due is left behind
    for (let i = 0; i < 10; i++) {
      const req = request()
      void core.admit(req)
      core.observe(req, res)
    }
    await turn()
    expect(core.anomaly?.explain('10.0.0.1')?.requests).toBe(10)
  })

  it('an observation made while a batch is taken (an event listener) goes to the next batch', async () => {
    const core = instance()
    core.events.on('anomaly.flagged', () => {
      const other = request('10.0.0.2')
      void core.admit(other)
      core.observe(other, response())
    })
    const notFound = response(404)
    for (let i = 0; i < 12; i++) {
      const req = request()
      req.url = `/wp-${i}.php`
      void core.admit(req)
      core.observe(req, notFound)
    }
    await turn()
    expect(core.anomaly?.explain('10.0.0.1')).toMatchObject({ requests: 12, reasons: ['rule:scanner'] })
    await turn()
    expect(core.anomaly?.explain('10.0.0.2')?.requests).toBe(1)
  })

  it('keeps what the update reads, not the request (nor, through it, its state and response)', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const core = instance()
    const collected: string[] = []
    const registry = new FinalizationRegistry<string>((name) => collected.push(name))
    ;(() => {
      const req = request()
      const res = response()
      registry.register(req, 'request')
      registry.register(res, 'response')
      void core.admit(req)
      core.track(req, res) // as the adapters do: the request's state now holds its response
      core.observe(req, res)
    })()
    // The batch is still waiting (same turn): a request it held would survive this collection.
    gc()
    expect(core.anomaly?.explain('10.0.0.1')).toBeUndefined()
    for (let i = 0; i < 50 && collected.length < 2; i++) await sleep(10)
    expect(collected.sort()).toEqual(['request', 'response'])
    expect(core.anomaly?.explain('10.0.0.1')?.requests).toBe(1)
  })
})
