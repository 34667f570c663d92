/**
 * The history's tiers on a virtual clock: a week of load replayed in well under a second,
 * then the 10 m / 30 m / 6 h / 24 h / 7 d queries checked against what the test itself
 * counted (sums, counts, mins, maxes, buckets); and the edges of rolling over (gaps
 * shorter and longer than each tier, a clock stepped back, a jump past the whole week).
 */
import type { IncomingMessage } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { createEventBus } from '../src/kernel/events.js'
import type { AdmittedState } from '../src/kernel/types.js'
import { historyEngine, historySchema, type HistoryQuery, type HistoryResult } from '../src/history/index.js'
import { AegisArgumentError } from '../src/kernel/errors.js'

const DAY = 86_400_000
/** A Monday, midnight UTC: minutes and days fall on round numbers. */
const T0 = Date.UTC(2025, 0, 6)

let closers: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const close of closers.reverse()) await close()
  closers = []
})

function setup(options: Record<string, unknown> = {}) {
  let now = T0
  const events = createEventBus((err) => {
    throw err
  })
  const engine = historyEngine(
    historySchema.parse({ sampleMs: 0, instance: 'test', clock: () => now, ...options }),
    {
      events,
      store: undefined,
      logger: undefined,
    },
  )
  closers.push(async () => {
    await engine.close?.()
  })
  const req = {} as IncomingMessage
  const state = {} as AdmittedState
  return {
    engine,
    events,
    api: engine.api,
    set: (t: number) => void (now = t),
    now: () => now,
    request: (status: number, ms: number) => engine.observe?.(req, state, { status, ms }),
  }
}

interface Made {
  readonly t: number
  readonly status: number
  readonly ms: number
}

/** What the test made within a result's window: totals, and per point the per-second extremes. */
function expected(made: readonly Made[], r: HistoryResult) {
  const inside = made.filter((m) => m.t >= r.from && m.t < r.to)
  const perPoint = r.times.map((t) => inside.filter((m) => m.t >= t && m.t < t + r.step))
  const perSecondMax = perPoint.map((ms) => {
    const bySecond = new Map<number, number>()
    for (const m of ms) bySecond.set(Math.floor(m.t / 1000), (bySecond.get(Math.floor(m.t / 1000)) ?? 0) + 1)
    return Math.max(0, ...bySecond.values())
  })
  return { inside, perPoint, perSecondMax }
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0)

describe('history tiers on a virtual clock', () => {
  it('a replayed week answers 10m, 30m, 6h, 24h and 7d with the sums, counts, mins and maxes the test made', async () => {
    const h = setup()
    const made: Made[] = []
    // A week, a burst every 97 s (more at "daytime"), statuses and latencies from a fixed pattern.
    const statuses = [200, 200, 201, 304, 404, 500, 499, 101, 200, 429]
    let k = 0
    for (let t = T0; t < T0 + 7 * DAY; t += 97_000) {
      h.set(t)
      const n = 1 + ((t / 97_000) % 5)
      for (let i = 0; i < n; i++) {
        const status = statuses[k % statuses.length] as number
        const ms = ((k * 7919) % 3000) / 10 // 0 … 299.9 ms
        k++
        h.request(status, ms)
        made.push({ t, status, ms })
      }
    }
    const end = T0 + 7 * DAY - 1000
    h.set(end)
    for (const range of ['10m', '30m', '6h', '24h', '7d'] as const) {
      const r = await h.api.query({ range })
      const { inside, perPoint, perSecondMax } = expected(made, r)
      expect(r.version).toBe(1)
      expect(r.to - r.from).toBe(r.step * r.times.length)
      expect(r.to).toBeGreaterThan(end)
      const req = r.series.requests!
      expect(sum(req.sum)).toBe(inside.length)
      expect(req.sum).toEqual(perPoint.map((p) => p.length))
      expect(req.max).toEqual(perSecondMax.map((m, i) => (r.seconds[i]! > 0 ? m : null)))
      // Every covered point had quiet seconds: its quietest second counted none.
      expect(req.min.every((m, i) => (r.seconds[i]! > 0 ? m === 0 : m === null))).toBe(true)
      expect(req.count).toEqual(r.seconds)
      const cls = (c: string) =>
        inside.filter((m) =>
          c === '499' ? m.status === 499 : m.status !== 499 && `${String(m.status)[0]}xx` === c,
        ).length
      for (const c of ['1xx', '2xx', '3xx', '4xx', '5xx', '499'])
        expect(sum(r.series[`status.${c}`]!.sum), c).toBe(cls(c))
      const lat = r.series.latency!
      expect(sum(lat.count)).toBe(inside.length)
      expect(sum(lat.sum)).toBeCloseTo(sum(inside.map((m) => m.ms)), 6)
      perPoint.forEach((p, i) => {
        expect(lat.min[i]).toBe(p.length === 0 ? null : Math.min(...p.map((m) => m.ms)))
        expect(lat.max[i]).toBe(p.length === 0 ? null : Math.max(...p.map((m) => m.ms)))
      })
      const hist = r.histograms.latency!
      expect(hist.bounds.at(-1)).toBeNull()
      expect(hist.counts.map(sum)).toEqual(perPoint.map((p) => p.length))
      const le100 = hist.bounds.indexOf(100)
      const under100 = sum(hist.counts.map((c) => sum(c.slice(0, le100 + 1))))
      expect(under100).toBe(inside.filter((m) => m.ms <= 100).length)
    }
    const week = await h.api.query({ range: '7d' })
    expect(week.step).toBe(3_600_000)
    expect(week.times).toHaveLength(168)
    // The last 168 hours, the open one included: the whole replay.
    expect(week.from).toBe(T0)
    expect(sum(week.series.requests!.sum)).toBe(made.length)
    expect(sum(week.seconds)).toBe((end - week.from) / 1000 + 1)
    const all = await h.api.query({ from: T0, to: end + 1000 })
    expect(all.step).toBe(1_800_000)
    expect(sum(all.series.requests!.sum)).toBe(made.length)
  })

  it('steps: each range its own, explicit ranges the shortest that fits, merged never under a minute', async () => {
    const h = setup()
    h.set(T0 + DAY + 12_345)
    h.request(200, 1)
    const steps = Object.fromEntries(
      await Promise.all(
        (['10m', '30m', '6h', '24h', '7d'] as const).map(async (range) => {
          const r = await h.api.query({ range })
          return [range, [r.step, r.times.length]] as const
        }),
      ),
    )
    expect(steps).toEqual({
      '10m': [5_000, 120],
      '30m': [60_000, 30],
      '6h': [300_000, 72],
      '24h': [900_000, 96],
      '7d': [3_600_000, 168],
    })
    const custom = await h.api.query({ from: T0 + DAY - 3_600_000, to: T0 + DAY + 60_000, points: 60 })
    expect(custom.range).toBe('custom')
    expect(custom.step).toBe(300_000)
    const recent = await h.api.query({ from: T0 + DAY - 60_000, to: T0 + DAY + 13_000 })
    expect(recent.step).toBe(1_000)
    expect(sum(recent.series.requests!.sum)).toBe(1)
    expect((await h.api.query({ range: '10m', merge: true })).step).toBe(60_000)
    const only = await h.api.query({ range: '30m', series: ['status.*', 'latency'], histograms: false })
    expect(Object.keys(only.series).sort()).toEqual([
      'latency',
      'status.1xx',
      'status.2xx',
      'status.3xx',
      'status.499',
      'status.4xx',
      'status.5xx',
    ])
    expect(only.histograms).toEqual({})
    for (const bad of [
      { range: '1y' },
      { from: 10, to: 5 },
      { range: '6h', from: 1 },
      { step: 7_000, range: '6h' },
      { from: 0, to: DAY * 30, step: 60_000 },
      { nope: true },
    ])
      await expect(h.api.query(bad as HistoryQuery)).rejects.toBeInstanceOf(AegisArgumentError)
  })

  it('rejections by reason, limiter hits, upstreams, breakers, ghost serves and anomaly verdicts', async () => {
    const h = setup()
    h.set(T0 + 5_000)
    const reject = h.engine.rejected!.bind(h.engine)
    reject('rate-limit')
    reject('rate-limit-blocked')
    reject('validation')
    for (let i = 0; i < 20; i++) reject(`custom-${i}`)
    const settled = h.engine.upstream!.settled!
    settled('api', 'success', 12)
    settled('api', 'connect-error', 3)
    settled('api', 'cancelled', 50)
    settled('api', 'timeout', 5000)
    h.events.emit('upstream.breaker', { route: 'api', upstream: 'u', state: 'open', origin: 'local' })
    h.events.emit('upstream.breaker', { route: 'api', upstream: 'u', state: 'half-open', origin: 'local' })
    h.events.emit('upstream.breaker', { route: 'api', upstream: 'u', state: 'open', origin: 'peer' })
    h.events.emit('ghost.served', { route: 'api', reason: 'timeout' })
    h.events.emit('anomaly.flagged', { key: 'k', client: 'c', score: 0.9, reasons: [] })
    h.events.emit('anomaly.blocked', {
      key: 'k',
      score: 0.9,
      reasons: [],
      strikes: 1,
      coolDownMs: 1,
      until: 1,
    })
    h.events.emit('anomaly.blocked', {
      key: 'k',
      score: 0.9,
      reasons: [],
      strikes: 1,
      coolDownMs: 1,
      until: 1,
      shared: true,
    })
    h.set(T0 + 65_000)
    const r = await h.api.query({ range: '30m' })
    const total = (name: string) => sum(r.series[name]?.sum ?? [])
    expect(total('rejected')).toBe(23)
    expect(total('limited')).toBe(2)
    expect(total('rejected.rate-limit')).toBe(1)
    expect(total('rejected.validation')).toBe(1)
    // 16 reasons of their own; the 7 after them share `other`.
    expect(Object.keys(r.series).filter((n) => n.startsWith('rejected.'))).toHaveLength(17)
    expect(total('rejected.other')).toBe(7)
    expect(total('upstream.requests')).toBe(4)
    expect(total('upstream.errors')).toBe(2)
    expect(sum(r.series['upstream.latency']!.count)).toBe(4)
    expect(Math.max(...r.series['upstream.latency']!.max.map((m) => m ?? 0))).toBe(5000)
    expect(total('breaker.open')).toBe(1)
    expect(total('breaker.half-open')).toBe(1)
    expect(total('ghost.served')).toBe(1)
    expect(total('anomaly.flagged')).toBe(1)
    expect(total('anomaly.blocked')).toBe(1)
  })

  it('gaps: quiet seconds and minutes are covered zeros; a gap past the ring or the week leaves no stale numbers', async () => {
    const h = setup()
    h.set(T0)
    h.request(200, 5)
    // Three quiet minutes.
    h.set(T0 + 3 * 60_000 + 30_000)
    h.request(200, 7)
    let r = await h.api.query({ from: T0, to: T0 + 4 * 60_000, step: 60_000 })
    expect(r.seconds).toEqual([60, 60, 60, 31])
    expect(r.series.requests!.sum).toEqual([1, 0, 0, 1])
    expect(r.series.requests!.max).toEqual([1, 0, 0, 1])
    expect(r.series.latency!.min).toEqual([5, null, null, 7])
    // A gap longer than the seconds ring: the ring holds quiet seconds only.
    h.set(T0 + 30 * 60_000)
    const live = h.api.live(600)
    expect(live.times).toHaveLength(600)
    expect(sum(live.series.requests!.sum)).toBe(0)
    expect(sum(live.seconds)).toBe(600)
    // More than the week later, everything before is gone (and rolling over took no time to speak of).
    const started = performance.now()
    h.set(T0 + 9 * DAY)
    h.request(500, 1)
    expect(performance.now() - started).toBeLessThan(2_000)
    r = await h.api.query({ range: '7d' })
    expect(sum(r.series.requests!.sum)).toBe(1)
    expect(sum(r.series['status.2xx']!.sum)).toBe(0)
    // The week of quiet seconds before it is covered.
    expect(sum(r.seconds)).toBe((T0 + 9 * DAY - r.from) / 1000 + 1)
  })

  it('a clock stepped back keeps counting into the latest second, never twice', async () => {
    const h = setup()
    h.set(T0 + 120_000)
    h.request(200, 1)
    h.set(T0 + 60_000) // back a minute
    h.request(200, 2)
    h.request(200, 3)
    let r = await h.api.query({ from: T0, to: T0 + 180_000, step: 60_000 })
    expect(r.series.requests!.sum).toEqual([0, 0, 3])
    h.set(T0 + 121_000)
    h.request(200, 4)
    r = await h.api.query({ from: T0, to: T0 + 180_000, step: 60_000 })
    expect(r.series.requests!.sum).toEqual([0, 0, 4])
    expect(r.series.requests!.max).toEqual([0, 0, 3]) // covered since the engine started, at T0
    // A clock that throws or says NaN changes nothing either.
    h.set(Number.NaN)
    h.request(200, 5)
    h.set(T0 + 122_000)
    r = await h.api.query({ from: T0, to: T0 + 180_000, step: 60_000 })
    expect(r.series.requests!.sum).toEqual([0, 0, 5])
  })

  it('live() and onSecond(): each closed second once, quiet ones included; a throwing listener is kept', () => {
    const h = setup()
    const seen: { time: number; requests: number; latency: number | undefined }[] = []
    h.set(T0)
    const off = h.api.onSecond((s) => {
      seen.push({ time: s.time, requests: s.counters.requests ?? 0, latency: s.values.latency?.count })
    })
    let thrown = 0
    const offThrowing = h.api.onSecond(() => {
      thrown++
      throw new Error('listener bug')
    })
    h.request(200, 1)
    h.request(404, 2)
    h.set(T0 + 3_000)
    h.request(200, 3)
    h.set(T0 + 4_500)
    h.api.live()
    expect(seen).toEqual([
      { time: T0, requests: 2, latency: 2 },
      { time: T0 + 1000, requests: 0, latency: undefined },
      { time: T0 + 2000, requests: 0, latency: undefined },
      { time: T0 + 3000, requests: 1, latency: 1 },
    ])
    expect(thrown).toBe(4)
    off()
    offThrowing()
    h.set(T0 + 9_000)
    const live = h.api.live(10)
    expect(live.range).toBe('live')
    expect(live.step).toBe(1000)
    expect(live.times).toEqual(Array.from({ length: 10 }, (_, i) => T0 + i * 1000))
    expect(live.series.requests!.sum).toEqual([2, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    expect(seen).toHaveLength(4)
  })

  it('runtime() samples the process; with the timer the runtime series fill', async () => {
    const h = setup()
    const r = h.api.runtime()
    expect(r.version).toBe(1)
    expect(r.instance).toBe('test')
    expect(r.heap.used).toBeGreaterThan(0)
    expect(r.rss).toBeGreaterThan(0)
    expect(r.uptime).toBeGreaterThan(0)
    expect(await h.api.redis()).toBeUndefined()
    expect(await h.api.flush()).toBe(false)

    let now = Date.now()
    const timed = historyEngine(historySchema.parse({ sampleMs: 100, clock: () => now }), {
      events: createEventBus(() => undefined),
      store: undefined,
      logger: undefined,
    })
    closers.push(async () => timed.close?.())
    await new Promise((resolve) => setTimeout(resolve, 450))
    now += 2000
    const q = await timed.api.query({ range: '10m' })
    expect(sum(q.series['runtime.heapUsed']!.count)).toBeGreaterThanOrEqual(3)
    expect(sum(q.series['runtime.cpu']!.count)).toBeGreaterThanOrEqual(2)
    expect(Math.max(...q.series['runtime.rss']!.max.map((m) => m ?? 0))).toBeGreaterThan(0)
  })

  it('close() leaves no timer behind', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
    const engine = historyEngine(historySchema.parse({}), {
      events: createEventBus(() => undefined),
      store: undefined,
      logger: undefined,
    })
    await engine.close?.()
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBe(before)
  })
})
