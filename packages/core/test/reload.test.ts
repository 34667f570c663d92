import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis, type AegisEvents, type AegisOptions } from '@aegis/core'
import { send } from '../../../test/helpers/send.js'
import { startUpstream, type Upstream } from '../../../test/helpers/upstream.js'
import { sleep, waitFor } from '../../../test/helpers/wait.js'

let aegis: Aegis | undefined
let server: Server | undefined
const upstreams: Upstream[] = []

afterEach(async () => {
  await aegis?.close()
  aegis = undefined
  if (server?.listening) await new Promise((r) => server?.close(r))
  server = undefined
  await Promise.all(upstreams.splice(0).map((u) => u.close()))
})

/** An instance behind a plain node:http server: `/` answers ok, `/slow` after 300 ms. */
async function start(options: AegisOptions): Promise<{ core: Aegis; url: string }> {
  const core = createAegis(options)
  aegis = core
  server = createServer(
    core.handler((req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('slow'), 300)
      else res.end('ok')
    }),
  )
  core.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { core, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** `ratelimit: "default";r=41;t=60` → 41 */
const remaining = (headers: Record<string, string>): number =>
  Number(/;r=(\d+)/.exec(headers.ratelimit ?? '')?.[1] ?? Number.NaN)

/** Keep `clients` request loops on `url` until `until` resolves; every answer's status and frame option. */
async function underLoad(
  url: string,
  clients: number,
  until: Promise<unknown>,
  answers: { status: number; frame: string | undefined }[],
) {
  const errors: unknown[] = []
  let done = false
  void until.finally(() => (done = true))
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (!done) {
        try {
          const a = await send(`${url}/`)
          answers.push({ status: a.status, frame: a.headers['x-frame-options'] })
        } catch (err) {
          errors.push(err)
        }
      }
    }),
  )
  return { answers, errors }
}

const listen = <K extends keyof AegisEvents>(core: Aegis, type: K): AegisEvents[K][] => {
  const seen: AegisEvents[K][] = []
  core.events.on(type, (e) => seen.push(e))
  return seen
}

describe('reload', () => {
  it('under load: no request fails, the new headers are in force, and the limiter keeps its counters', async () => {
    const base: AegisOptions = {
      limiter: { points: 100_000, duration: 31_536_000 },
      headers: { frameOptions: 'DENY' },
    }
    const { core, url } = await start(base)
    const reloaded = listen(core, 'config.reloaded')
    expect(core.generation).toBe(1)
    const first = await send(`${url}/`)
    expect(first.headers['x-frame-options']).toBe('DENY')

    const answers: { status: number; frame: string | undefined }[] = []
    const more = async (n: number) => {
      const then = answers.length
      await waitFor(`${n} more answers`, () => answers.length >= then + n)
    }
    const swaps = (async () => {
      await more(20)
      const r1 = await core.reload(
        { ...base, headers: { frameOptions: 'SAMEORIGIN' } },
        { source: 'api', actor: 'ops' },
      )
      await more(20)
      const r2 = await core.reload({ ...base, headers: { frameOptions: false } })
      await more(20)
      return [r1, r2]
    })()
    const { errors } = await underLoad(url, 8, swaps, answers)
    const [r1, r2] = await swaps

    expect(errors).toEqual([])
    expect(answers.every((a) => a.status === 200)).toBe(true)
    // The three configurations were each in force, in order.
    const frames = answers.map((a) => a.frame ?? 'none')
    expect(frames).toContain('DENY')
    expect(frames).toContain('SAMEORIGIN')
    expect(frames.at(-1)).toBe('none')
    expect(r1).toMatchObject({ ok: true, changed: true, generation: 2 })
    expect(r2).toMatchObject({ ok: true, changed: true, generation: 3 })
    expect(core.generation).toBe(3)
    expect(core.config.headers).toMatchObject({ frameOptions: false })
    // The limiter's section did not change: it is the same limiter, counting on.
    const after = await send(`${url}/`)
    // (A year's 100,000 points refill one every 5 minutes: nothing during the test.)
    expect(remaining(after.headers)).toBe(100_000 - answers.length - 2)
    expect(reloaded).toHaveLength(2)
    expect(reloaded[0]).toMatchObject({
      generation: 2,
      source: 'api',
      actor: 'ops',
      diff: [{ op: 'replace', path: '/headers/frameOptions', value: 'SAMEORIGIN' }],
    })
    expect(reloaded[0]?.engines.kept).toContain('limiter')
    expect(reloaded[0]?.engines.built).toEqual(['headers'])
    expect(reloaded[0]?.before).not.toBe(reloaded[0]?.after)
  })

  it('a changed limit is in force at once; an unchanged one keeps its count', async () => {
    const { core, url } = await start({ limiter: { points: 5, duration: 60 } })
    for (let i = 0; i < 3; i++) expect((await send(`${url}/`)).status).toBe(200)
    // Another section changed: 2 left still.
    await core.reload({ limiter: { points: 5, duration: 60 }, cors: { origin: 'https://a.example' } })
    expect(remaining((await send(`${url}/`)).headers)).toBe(1)
    // The limit itself changed: a new limiter, with the new limit.
    const result = await core.reload({
      limiter: { points: 2, duration: 60 },
      cors: { origin: 'https://a.example' },
    })
    expect(result).toMatchObject({ ok: true, generation: 3 })
    expect((await send(`${url}/`)).status).toBe(200)
    expect((await send(`${url}/`)).status).toBe(200)
    expect((await send(`${url}/`)).status).toBe(429)
  })

  it('refuses bad options with their paths: the configuration in force keeps running', async () => {
    const { core, url } = await start({ limiter: { points: 50, duration: 60 } })
    const refused = listen(core, 'config.refused')
    const bad = await core.reload(
      { limiter: { points: -1, duration: 60 } },
      {
        source: 'file',
      },
    )
    expect(bad.ok).toBe(false)
    expect(bad.generation).toBe(1)
    if (!bad.ok) expect(bad.errors.map((e) => e.path)).toContain('limiter.points')
    const store = await core.reload({
      limiter: { points: 50, duration: 60 },
      store: { redis: 'redis://127.0.0.1:1' },
    })
    expect(store).toMatchObject({
      ok: false,
      errors: [{ path: 'store', message: expect.stringContaining('needs a restart') }],
    })
    expect(refused).toHaveLength(2)
    expect(refused[0]).toMatchObject({ generation: 1, source: 'file' })
    expect(core.generation).toBe(1)
    expect(core.config.limiter).toMatchObject({ points: 50 })
    expect((await send(`${url}/`)).status).toBe(200)
    // The same options again: nothing to do.
    expect(await core.reload({ limiter: { points: 50, duration: 60 } })).toMatchObject({
      ok: true,
      changed: false,
      generation: 1,
    })
    // Audited.
    expect(core.audit?.entries().some((e) => e.type === 'config.refused')).toBe(true)
  })

  it('an audit trail built anew records the reload; the old one stops listening', async () => {
    const sunk: string[] = []
    const { core } = await start({ audit: { size: 100, sink: (e) => void sunk.push(`old ${e.type}`) } })
    const old = core.audit
    await core.reload({ audit: { size: 200, sink: (e) => void sunk.push(`new ${e.type}`) } })
    expect(core.audit).not.toBe(old)
    expect(core.audit?.entries().map((e) => e.type)).toEqual(['config.reloaded'])
    await core.reload({ audit: { size: 200, sink: (e) => void sunk.push(`new ${e.type}`) } })
    expect(sunk).toEqual(['new config.reloaded', 'new config.reloaded'])
    expect(old?.entries()).toEqual([])
  })

  it('validate(): a dry run with a redacted RFC 6902 diff', async () => {
    const { core } = await start({ admin: { token: 'a'.repeat(32), listen: false, mount: '/_aegis' } })
    const result = core.validateConfig({
      admin: { token: 'b'.repeat(32), listen: false, mount: '/_aegis' },
      limiter: { points: 10, duration: 1 },
    })
    expect(result.ok).toBe(true)
    if (!result.ok) return
    expect(result.changed).toBe(true)
    expect(JSON.stringify(result.diff)).not.toContain('bbbb')
    expect(result.diff).toContainEqual(expect.objectContaining({ path: '/limiter/points', value: 10 }))
    expect(result.before).not.toBe(result.after)
    expect(core.generation).toBe(1)
    const bad = core.validateConfig({ validator: { maxBodyBytes: 'many' } } as unknown as AegisOptions)
    expect(bad).toMatchObject({ ok: false, errors: [{ path: 'validator.maxBodyBytes' }] })
  })

  it('a request admitted before a reload finishes on the engines that admitted it', async () => {
    const { core, url } = await start({ headers: { frameOptions: 'DENY' } })
    const slow = send(`${url}/slow`)
    await sleep(100)
    await core.reload({ headers: { frameOptions: 'SAMEORIGIN' } })
    const a = await slow
    expect(a.status).toBe(200)
    expect(a.headers['x-frame-options']).toBe('DENY')
    expect((await send(`${url}/`)).headers['x-frame-options']).toBe('SAMEORIGIN')
  })

  it('gateway: an unchanged route keeps its ProxyRoute (pools, health, breakers); a changed one is rebuilt, the removed one drained', async () => {
    const a = await startUpstream('a')
    const b = await startUpstream('b')
    const c = await startUpstream('c', (_req, res) => setTimeout(() => res.end('c'), 300))
    upstreams.push(a, b, c)
    const routes = (bUrl: string, withC: boolean): AegisOptions => ({
      proxy: [
        { prefix: '/a', upstreams: [a.url] },
        { prefix: '/b', upstreams: [bUrl] },
        ...(withC ? [{ prefix: '/c', upstreams: [c.url] }] : []),
      ],
    })
    const { core, url } = await start(routes(b.url, true))
    const routeOf = (prefix: string) => core.gateway.routes.find((r) => r.config.prefix === prefix)
    const keptA = routeOf('/a')
    expect((await send(`${url}/b/x`)).headers['x-upstream']).toBe('b')
    // A request in flight on /c while /c goes away.
    const inFlight = send(`${url}/c/x`)
    await sleep(100)
    const result = await core.reload(routes(a.url, false))
    expect(result.ok).toBe(true)
    expect(routeOf('/a')).toBe(keptA)
    expect(routeOf('/b')?.config.upstreams).toEqual([expect.objectContaining({ url: a.url })])
    expect(routeOf('/c')).toBeUndefined()
    expect(await inFlight).toMatchObject({ status: 200, body: 'c' })
    expect((await send(`${url}/b/x`)).headers['x-upstream']).toBe('a')
    // The app's now: no route takes it.
    expect(await send(`${url}/c/x`)).toMatchObject({ status: 200, body: 'ok' })
  })

  it('gateway: a route whose upstream is down keeps its open breaker when another route changes', async () => {
    const a = await startUpstream('a')
    const down = await startUpstream('down')
    upstreams.push(a)
    await down.close()
    const options = (extra: string): AegisOptions => ({
      proxy: [
        {
          prefix: '/down',
          upstreams: [down.url],
          retry: false,
          breaker: { volumeThreshold: 2, errorThresholdPercentage: 50 },
        },
        { prefix: '/a', upstreams: [a.url], name: extra },
      ],
    })
    const { core, url } = await start(options('one'))
    const breakers = listen(core, 'upstream.breaker')
    for (let i = 0; i < 4; i++) await send(`${url}/down/x`)
    await waitFor('the breaker to open', () => breakers.some((e) => e.state === 'open'))
    const opened = breakers.length
    expect((await core.reload(options('two'))).ok).toBe(true)
    // Still open: refused at once, no new transition.
    const after = await send(`${url}/down/x`)
    expect(after.status).toBe(503)
    expect(breakers.length).toBe(opened)
    expect((await send(`${url}/a/x`)).headers['x-upstream']).toBe('a')
  })

  it('ghost entries survive a reload that does not touch the ghost', async () => {
    const a = await startUpstream('a')
    upstreams.push(a)
    const options = (frame: 'DENY' | 'SAMEORIGIN'): AegisOptions => ({
      headers: { frameOptions: frame },
      ghost: true,
      proxy: [{ prefix: '/a', upstreams: [a.url] }],
    })
    const { core, url } = await start(options('DENY'))
    expect((await send(`${url}/a/item`)).status).toBe(200)
    await waitFor('an entry', async () => ((await core.ghost?.list()) ?? []).length > 0)
    const ghost = core.ghost
    await core.reload(options('SAMEORIGIN'))
    expect(core.ghost).toBe(ghost)
    expect((await core.ghost?.list())?.length).toBeGreaterThan(0)
  })
})
