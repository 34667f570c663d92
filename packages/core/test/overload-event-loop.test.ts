import { afterEach, describe, expect, it, vi } from 'vitest'
import { createLoopMonitor, shedSchema, type LoopDelayHistogram } from '../src/overload/event-loop.js'

/** Block the event loop, as a CPU-bound handler would. */
function busyWait(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) {
    // spin
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Poll `predicate` every 5 ms; fail after `timeoutMs`. */
async function until(predicate: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!predicate()) {
    if (performance.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(5)
  }
}

describe('loop monitor on the real event loop', () => {
  it('sheds after a 200 ms stall and stops once the loop is idle again', async () => {
    const monitor = createLoopMonitor({ maxLagMs: 100, sampleIntervalMs: 50, resolutionMs: 10 })
    try {
      // Let start-up noise (module loading, other workers) pass.
      await until(() => !monitor.overloaded(), 2_000)
      await sleep(60)

      busyWait(200)
      let lagWhileShedding = 0
      await until(() => {
        lagWhileShedding = monitor.lagMs
        return monitor.overloaded()
      }, 1_000)
      expect(lagWhileShedding).toBeGreaterThan(100)
      expect(monitor.retryAfterSeconds).toBeGreaterThanOrEqual(1)

      await until(() => !monitor.overloaded(), 1_000)
      expect(monitor.lagMs).toBeLessThan(80)
    } finally {
      monitor.close()
    }

    // Closed: no more readings, so a new stall goes unnoticed and nothing keeps the process alive.
    busyWait(150)
    await sleep(120)
    expect(monitor.overloaded()).toBe(false)
    expect(monitor.lagMs).toBe(0)
    monitor.close()
  })
})

describe('loop monitor, deterministic', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  /** A histogram whose reading the test sets; values in ns, like perf_hooks. */
  function fakeHistogram() {
    const h = {
      max: 0,
      count: 0,
      enabled: false,
      enable: () => (h.enabled = true),
      disable: () => (h.enabled = false),
      reset: () => {
        h.max = 0
        h.count = 0
      },
    }
    return h satisfies LoopDelayHistogram
  }

  function setup() {
    vi.useFakeTimers()
    let t = 0
    const histogram = fakeHistogram()
    const monitor = createLoopMonitor(
      { maxLagMs: 100, sampleIntervalMs: 50, resolutionMs: 10 },
      { now: () => t, histogram },
    )
    /** One interval during which the worst loop delay was `lagMs` (the reading timer itself on time). */
    const interval = (lagMs: number, timerLateMs = 0): void => {
      histogram.max = (lagMs + 10) * 1e6
      histogram.count = 5
      t += 50 + timerLateMs
      vi.advanceTimersByTime(50)
    }
    return { monitor, histogram, interval }
  }

  it('enters above maxLagMs and leaves only below 80 % of it', () => {
    const { monitor, interval } = setup()
    const seen: boolean[] = []
    for (const lag of [20, 150, 90, 85, 70, 90, 100, 101, 79]) {
      interval(lag)
      seen.push(monitor.overloaded())
    }
    expect(seen).toEqual([false, true, true, true, false, false, false, true, false])
    monitor.close()
  })

  it('reports the lag, subtracting the histogram resolution, and a Retry-After', () => {
    const { monitor, interval } = setup()
    interval(0)
    expect(monitor.lagMs).toBe(0)
    interval(2_600)
    expect(monitor.lagMs).toBe(2_600)
    // (2600 + one 50 ms interval) rounded up to seconds.
    expect(monitor.retryAfterSeconds).toBe(3)
    interval(1e9)
    expect(monitor.retryAfterSeconds).toBe(60)
    monitor.close()
  })

  it('counts its own late timer as lag, for stalls the histogram missed', () => {
    const { monitor, histogram, interval } = setup()
    interval(0, 300)
    expect(histogram.count).toBe(0)
    expect(monitor.lagMs).toBe(300)
    expect(monitor.overloaded()).toBe(true)
    monitor.close()
  })

  it('close() clears the timer and disables the histogram', () => {
    const { monitor, histogram, interval } = setup()
    expect(histogram.enabled).toBe(true)
    expect(vi.getTimerCount()).toBe(1)
    interval(500)
    expect(monitor.overloaded()).toBe(true)
    monitor.close()
    expect(vi.getTimerCount()).toBe(0)
    expect(histogram.enabled).toBe(false)
    expect(monitor.overloaded()).toBe(false)
    monitor.close()
  })

  it.each([
    [{ maxLagMs: 0 }],
    [{ maxLagMs: Number.NaN }],
    [{ maxLagMs: 100, sampleIntervalMs: -1 }],
    [{ maxLagMs: 100, exitRatio: 1.5 }],
    [{ maxLagMs: 100, exitRatio: 0 }],
  ])('rejects %j', (options) => {
    expect(() => createLoopMonitor(options, { histogram: fakeHistogram() })).toThrow(RangeError)
  })
})

describe('shedSchema', () => {
  it('fills in the defaults and rejects unknown or out-of-range fields', () => {
    expect(shedSchema.parse({})).toEqual({ maxEventLoopDelayMs: 200, sampleIntervalMs: 500 })
    expect(shedSchema.safeParse({ maxLag: 10 }).success).toBe(false)
    expect(shedSchema.safeParse({ maxEventLoopDelayMs: 0 }).success).toBe(false)
    expect(shedSchema.safeParse({ sampleIntervalMs: 5 }).success).toBe(false)
  })
})
