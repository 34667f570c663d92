import { describe, expect, it } from 'vitest'
import {
  adaptiveSchema,
  createAdaptiveLimiter,
  type AdaptiveLimiter,
  type AdaptiveOptions,
  type AdaptiveStats,
} from '../src/overload/adaptive.js'

/** A service with `capacity` workers: latency is `baseMs` up to capacity, then grows with the queue. */
interface Service {
  capacity: number
  baseMs: number
  /** Relative spread of latency (0.2 = ±10 %). */
  noise: number
  /** Share of requests that fail. */
  failRate: number
}

/** Deterministic PRNG (mulberry32), so every run sees the same noise. */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const HORIZON = 8192

/**
 * Closed-loop simulation in 1 ms steps on a fake clock: `clients` callers send a request as soon
 * as their previous one ends; a shed caller retries on the next step. Latency is fixed when a
 * request is admitted, from the concurrency it joins.
 */
function simulate(options: AdaptiveOptions, service: Service, clients: number, random = prng(2)) {
  let now = 0
  const limiter: AdaptiveLimiter = createAdaptiveLimiter(options, () => now, random)
  const rand = prng(1)
  const due: number[][] = Array.from({ length: HORIZON }, () => [])
  const windows: AdaptiveStats[] = []
  const seen = { overLimit: 0, minLimit: Infinity, maxLimit: 0 }
  const run = (ms: number): void => {
    for (const end = now + ms; now < end; now++) {
      const bucket = due[now % HORIZON]!
      for (const start of bucket)
        limiter.release(now - start, service.failRate === 0 || rand() >= service.failRate)
      bucket.length = 0
      for (let free = clients - limiter.inflight; free > 0 && limiter.tryAcquire(); free--) {
        if (limiter.inflight > limiter.limit) seen.overLimit++
        const load = Math.max(1, limiter.inflight / service.capacity)
        const jitter = 1 + service.noise * (rand() - 0.5)
        const latency = Math.min(HORIZON - 1, Math.max(1, Math.round(service.baseMs * load * jitter)))
        due[(now + latency) % HORIZON]!.push(now)
      }
      seen.minLimit = Math.min(seen.minLimit, limiter.limit)
      seen.maxLimit = Math.max(seen.maxLimit, limiter.limit)
      const stats = limiter.stats()
      if (stats.windows !== windows.length) windows.push(stats)
    }
  }
  return {
    limiter,
    service,
    run,
    seen,
    /** One entry per evaluated window. */
    windows,
    /** Limits decided by the last `n` windows (a baseline measurement lowers the limit only meanwhile). */
    lastLimits: (n: number) => windows.slice(-n).map(decided),
  }
}

/** The limit a window decided; a baseline measurement that starts right after only lowers it meanwhile. */
const decided = (w: AdaptiveStats): number => Math.floor(w.estimate)
const range = (xs: number[]): number => Math.max(...xs) - Math.min(...xs)

const C = 50
const BASE = 10
const service = (over: Partial<Service> = {}): Service => ({
  capacity: C,
  baseMs: BASE,
  noise: 0.2,
  failRate: 0,
  ...over,
})

/** Every value lies in [lo, hi]. */
function expectWithin(values: number[], lo: number, hi: number): void {
  expect(Math.min(...values)).toBeGreaterThanOrEqual(lo)
  expect(Math.max(...values)).toBeLessThanOrEqual(hi)
}

// With the defaults the fixed point is ≈ (1 + tolerance) × C + √limit ≈ 1.4 C: the controller
// deliberately lets a little queueing build up (Envoy's buffer) so it keeps probing for capacity.
const NEAR_C = (c: number): [number, number] => [c, 1.6 * c]

describe('adaptive limiter: simulated service', () => {
  it.each([0.2, 1])('converges near the capacity and holds steady (latency noise ±%s/2)', (noise) => {
    const sim = simulate({}, service({ noise }), 300)
    sim.run(30_000)
    const last = sim.lastLimits(20)
    expectWithin(last, ...NEAR_C(C))
    // Steady latency, steady limit: the last 20 windows stay within a narrow band.
    expect(range(last)).toBeLessThanOrEqual(5)
    expect(sim.limiter.stats().sampleMs).toBeLessThanOrEqual(1.6 * BASE)
    expect(sim.seen.overLimit).toBe(0)
  })

  it('lowers the limit within a few windows when latency doubles, and raises it after recovery', () => {
    const sim = simulate({}, service(), 300)
    sim.run(30_000)
    const before = sim.limiter.limit

    // Half the capacity: every concurrency level now takes twice as long.
    let mark = sim.windows.length
    sim.service.capacity = C / 2
    sim.run(20_000)
    const slow = sim.windows.slice(mark).map(decided)
    expect(Math.min(...slow.slice(0, 4))).toBeLessThanOrEqual(0.7 * before)
    expectWithin(sim.lastLimits(10), ...NEAR_C(C / 2))
    expect(range(sim.lastLimits(10))).toBeLessThanOrEqual(4)

    mark = sim.windows.length
    sim.service.capacity = C
    sim.run(20_000)
    const recovered = sim.windows.slice(mark).map(decided)
    expect(Math.max(...recovered.slice(0, 8))).toBeGreaterThanOrEqual(C)
    expectWithin(sim.lastLimits(10), ...NEAR_C(C))
  })

  it('follows a baseline that drifts up (slower service) and back down', () => {
    const sim = simulate({}, service(), 300)
    sim.run(30_000)
    expect(sim.limiter.stats().baselineMs).toBeCloseTo(BASE, -1)

    // Twice as slow at any concurrency, same capacity: only a new measurement can tell this from
    // overload; it must come within a bounded number of windows, not the 60 s period.
    let mark = sim.windows.length
    sim.service.baseMs = 2 * BASE
    sim.run(20_000)
    const remeasured = sim.windows.slice(mark).findIndex((w) => w.baselineMs >= 1.7 * BASE)
    expect(remeasured).toBeGreaterThanOrEqual(0)
    expect(remeasured).toBeLessThanOrEqual(10)
    expectWithin(sim.lastLimits(10), ...NEAR_C(C))

    mark = sim.windows.length
    sim.service.baseMs = BASE
    sim.run(20_000)
    const back = sim.windows.slice(mark).findIndex((w) => w.baselineMs <= 1.2 * BASE)
    expect(back).toBeGreaterThanOrEqual(0)
    expect(back).toBeLessThanOrEqual(3)
    // No runaway: with a stale, doubled baseline the limit would climb to ≈ 2.5 C.
    expectWithin(sim.lastLimits(10), ...NEAR_C(C))
  })

  it.each([8, 30])('does not grow the limit past what %s clients use', (clients) => {
    const sim = simulate({}, service(), clients)
    sim.run(20_000)
    expect(Math.max(...sim.windows.map(decided))).toBeLessThanOrEqual(Math.max(20, 2.5 * clients))
  })

  it('never goes above maxLimit, even on an idle-fast service', () => {
    const sim = simulate({ maxLimit: 100 }, service({ capacity: 100_000 }), 500)
    sim.run(20_000)
    expect(sim.seen.maxLimit).toBe(100)
    expect(sim.limiter.limit).toBe(100)
    expect(sim.seen.overLimit).toBe(0)
  })

  it('never goes below minLimit, even on a hopeless service', () => {
    const sim = simulate({ minLimit: 5, initialLimit: 5 }, service({ capacity: 1, baseMs: 50 }), 200)
    sim.run(20_000)
    expect(sim.seen.minLimit).toBe(5)
    expect(sim.seen.overLimit).toBe(0)
  })

  it('pushes the limit down when requests fail, and recovers when they succeed again', () => {
    const sim = simulate({}, service(), 300)
    sim.run(30_000)
    const before = sim.limiter.limit

    // A few failures (below dropTolerance, 5 %) are not overload.
    sim.service.failRate = 0.02
    sim.run(10_000)
    expectWithin(sim.lastLimits(10), ...NEAR_C(C))

    const mark = sim.windows.length
    sim.service.failRate = 1
    sim.run(10_000)
    const failing = sim.windows.slice(mark).map(decided)
    for (let i = 1; i < failing.length; i++) expect(failing[i]).toBeLessThanOrEqual(failing[i - 1]!)
    expect(failing[4]).toBeLessThanOrEqual(0.6 * before)
    // Halved, it measures the baseline again, which needs successes: it waits at the floor.
    expect(sim.limiter.limit).toBe(4)

    sim.service.failRate = 0
    sim.run(15_000)
    expectWithin(sim.lastLimits(10), ...NEAR_C(C))
  })

  it('measures the baseline again every minRttIntervalMs plus jitter', () => {
    const options = { minRttIntervalMs: 10_000, minRttJitter: 0.2 }
    // random() = 0.5: the next measurement is due 11 s after the first one ends.
    const sim = simulate(options, service(), 30, () => 0.5)
    sim.run(10_900)
    expect(sim.limiter.stats().probes).toBe(1)
    sim.run(1_700)
    expect(sim.limiter.stats().probes).toBe(2)
  })

  it('is deterministic for a given clock and random source', () => {
    const a = simulate({}, service({ noise: 1 }), 300)
    const b = simulate({}, service({ noise: 1 }), 300)
    a.run(20_000)
    b.run(20_000)
    expect(a.windows.map((w) => w.estimate)).toEqual(b.windows.map((w) => w.estimate))
  })
})

describe('adaptive limiter: bookkeeping', () => {
  it('starts by measuring the baseline at minLimit, then uses initialLimit', () => {
    let now = 0
    const limiter = createAdaptiveLimiter({ minLimit: 2, initialLimit: 6, probeSamples: 2 }, () => now)
    expect(limiter.limit).toBe(2)
    expect(limiter.tryAcquire()).toBe(true)
    expect(limiter.tryAcquire()).toBe(true)
    expect(limiter.tryAcquire()).toBe(false)
    expect(limiter.inflight).toBe(2)
    now = 30
    // Unusable latencies are not samples.
    limiter.release(Number.NaN, true)
    limiter.release(-1, true)
    expect(limiter.stats().probing).toBe(true)
    expect(limiter.tryAcquire()).toBe(true)
    expect(limiter.tryAcquire()).toBe(true)
    now = 50
    limiter.release(10, true)
    limiter.release(20, true)
    const stats = limiter.stats()
    expect(stats).toMatchObject({ probing: false, probes: 1, baselineMs: 10, limit: 6, inflight: 0 })
    expect(stats.rejected).toBe(1)
  })

  it('ignores samples of requests admitted before a measurement began', () => {
    let now = 100
    const limiter = createAdaptiveLimiter({ minLimit: 1, initialLimit: 1, probeSamples: 1 }, () => now)
    expect(limiter.tryAcquire()).toBe(true)
    now = 200
    // Started at 50, before the measurement began at 100.
    limiter.release(150, true)
    expect(limiter.stats().probing).toBe(true)
  })

  it('never counts inflight below zero', () => {
    const limiter = createAdaptiveLimiter({}, () => 0)
    limiter.ignore()
    limiter.release(1, false)
    expect(limiter.inflight).toBe(0)
    expect(limiter.tryAcquire()).toBe(true)
    limiter.ignore()
    expect(limiter.inflight).toBe(0)
    expect(limiter.stats().dropped).toBe(1)
  })
})

describe('adaptiveSchema', () => {
  it('fills in the defaults', () => {
    expect(adaptiveSchema.parse({})).toEqual({
      initialLimit: 20,
      minLimit: 4,
      maxLimit: 1000,
      tolerance: 0.25,
      smoothing: 0.5,
      percentile: 50,
      windowMs: 500,
      minWindowSamples: 10,
      minRttIntervalMs: 60_000,
      minRttJitter: 0.15,
      probeSamples: 25,
      dropTolerance: 0.05,
      backoffRatio: 0.9,
    })
  })

  it.each([
    [{ limit: 10 }],
    [{ minLimit: 10, maxLimit: 5 }],
    [{ initialLimit: 2000 }],
    [{ initialLimit: 2 }],
    [{ smoothing: 0 }],
    [{ percentile: 0 }],
    [{ backoffRatio: 1 }],
    [{ minLimit: 1.5 }],
  ])('rejects %j', (options) => {
    expect(adaptiveSchema.safeParse(options).success).toBe(false)
    expect(() => createAdaptiveLimiter(options as AdaptiveOptions)).toThrow()
  })
})
