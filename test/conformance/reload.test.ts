import { afterEach, describe, expect, it } from 'vitest'
import type { AegisOptions } from '@aegis/core'
import { send } from '../helpers/send.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { sleep, waitFor } from '../helpers/wait.js'
import { adapters, type TestApp } from './apps.js'

/** `ratelimit: "default";r=41;t=60` → 41 */
const remaining = (headers: Record<string, string>): number =>
  Number(/;r=(\d+)/.exec(headers.ratelimit ?? '')?.[1] ?? Number.NaN)

/** The apps start with the metrics path: a reload passes the whole options, and `metrics` needs a restart. */
const whole = (options: AegisOptions): AegisOptions => ({ metrics: { path: '/metrics' }, ...options })

describe.each(adapters)('%s: hot reload', (name, make) => {
  let app: TestApp | undefined
  const upstreams: Upstream[] = []
  afterEach(async () => {
    await app?.close()
    app = undefined
    await Promise.all(upstreams.splice(0).map((u) => u.close()))
  })

  it('applies under load with no failed request, keeps the limiter counting, then applies a new limit', async () => {
    const base: AegisOptions = {
      limiter: { points: 100_000, duration: 31_536_000 },
      headers: { frameOptions: 'DENY' },
    }
    app = await make(base)
    const { core, url } = app
    let done = false
    const statuses: number[] = []
    const frames = new Set<string>()
    const errors: unknown[] = []
    const load = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (!done)
          try {
            const a = await send(`${url}/`)
            statuses.push(a.status)
            frames.add(a.headers['x-frame-options'] ?? 'none')
          } catch (err) {
            errors.push(err)
          }
      }),
    )
    await waitFor('answers before the reload', () => statuses.length >= 10)
    const result = await core.reload(whole({ ...base, headers: { frameOptions: 'SAMEORIGIN' } }))
    const then = statuses.length
    await waitFor('answers after the reload', () => statuses.length >= then + 10)
    await sleep(50)
    done = true
    await load
    expect(result).toMatchObject({ ok: true, generation: 2 })
    expect(errors).toEqual([])
    expect(statuses.every((s) => s === 200)).toBe(true)
    expect([...frames].sort()).toEqual(['DENY', 'SAMEORIGIN'])
    const next = await send(`${url}/`)
    expect(next.headers['x-frame-options']).toBe('SAMEORIGIN')
    expect(remaining(next.headers)).toBe(100_000 - statuses.length - 1)

    expect((await core.reload(whole({ limiter: { points: 2, duration: 60 } }))).ok).toBe(true)
    const answers = [await send(`${url}/`), await send(`${url}/`), await send(`${url}/`)]
    expect(answers.map((a) => a.status)).toEqual([200, 200, 429])
    expect(core.generation).toBe(3)
  })

  it('a proxy route changes its upstreams in place; a new prefix is added, or refused where the router is sealed', async () => {
    const a = await startUpstream('a')
    const b = await startUpstream('b')
    upstreams.push(a, b)
    app = await make({ proxy: [{ prefix: '/api', upstreams: [a.url] }] })
    const { core, url } = app
    expect((await send(`${url}/api/x`)).headers['x-upstream']).toBe('a')
    expect((await core.reload(whole({ proxy: [{ prefix: '/api', upstreams: [b.url] }] }))).ok).toBe(true)
    expect((await send(`${url}/api/x`)).headers['x-upstream']).toBe('b')

    const added = await core.reload(
      whole({
        proxy: [
          { prefix: '/api', upstreams: [b.url] },
          { prefix: '/more', upstreams: [a.url] },
        ],
      }),
    )
    if (name === 'fastify') {
      expect(added).toMatchObject({ ok: false, errors: [{ path: 'proxy.1.prefix' }] })
      expect(core.generation).toBe(2)
    } else {
      expect(added).toMatchObject({ ok: true, generation: 3 })
      expect((await send(`${url}/more/x`)).headers['x-upstream']).toBe('a')
    }
  })
})
