import { afterEach, describe, expect, it, vi } from 'vitest'
import { createBreaker, type Breaker, type BreakerConfig, type BreakerState } from '../src/breaker/index.js'
import { breakerSchema } from '../src/breaker/options.js'

const config = (overrides: Partial<BreakerConfig> = {}): BreakerConfig =>
  breakerSchema.parse({ volumeThreshold: 2, resetTimeout: 100, ...overrides }) as BreakerConfig

/** opossum decides in promise callbacks: a macrotask later, it has. */
const settled = () => new Promise((resolve) => setImmediate(resolve))

const opened: Breaker[] = []
afterEach(() => {
  for (const b of opened.splice(0)) b.close()
})

function breaker(c: BreakerConfig): { b: Breaker; changes: BreakerState[] } {
  const changes: BreakerState[] = []
  const b = createBreaker(c, (state) => changes.push(state))
  opened.push(b)
  return { b, changes }
}

/** One request through `b`: admitted, then its outcome recorded. */
function request(b: Breaker, outcome: Parameters<Breaker['record']>[0]): boolean {
  if (!b.admits()) return false
  b.record(outcome)
  return true
}

describe('breaker', () => {
  it('stays closed below volumeThreshold requests, then opens when failures pass the percentage', async () => {
    const { b, changes } = breaker(config({ volumeThreshold: 3, errorThresholdPercentage: 50 }))
    expect(b.state).toBe('closed')
    request(b, 'success')
    request(b, 'connect-error')
    await settled()
    expect(b.state).toBe('closed') // two requests in the window: below the volume threshold
    request(b, 'server-error')
    await settled()
    expect(b.state).toBe('open') // two failures in three
    expect(changes).toEqual(['open'])
    expect(b.ready).toBe(false)
    expect(b.admits()).toBe(false)
  })

  it('opens only above errorThresholdPercentage', async () => {
    const { b } = breaker(config({ volumeThreshold: 1, errorThresholdPercentage: 50 }))
    for (const outcome of ['success', 'success', 'timeout', 'error'] as const) request(b, outcome)
    await settled()
    expect(b.state).toBe('closed') // 2 of 4 failed: 50%, not above it
    request(b, 'error')
    await settled()
    expect(b.state).toBe('open') // 3 of 5
  })

  it('counts every failure kind, and a client that left as a success', async () => {
    for (const kind of ['server-error', 'connect-error', 'timeout', 'error'] as const) {
      const { b } = breaker(config({ volumeThreshold: 1 }))
      request(b, kind)
      await settled()
      expect(b.state, kind).toBe('open')
    }
    const { b } = breaker(config({ volumeThreshold: 1 }))
    request(b, 'cancelled')
    await settled()
    expect(b.state).toBe('closed')
  })

  it('after resetTimeout admits one probe; its success closes the breaker', async () => {
    const { b, changes } = breaker(config({ volumeThreshold: 1, resetTimeout: 100 }))
    request(b, 'server-error')
    await settled()
    expect(b.state).toBe('open')
    await vi.waitFor(() => expect(b.state).toBe('half-open'), { timeout: 2000, interval: 10 })
    expect(b.ready).toBe(true)
    expect(b.admits()).toBe(true) // the probe
    expect(b.ready).toBe(false)
    expect(b.admits()).toBe(false) // nobody else while it is out
    b.record('success')
    await settled()
    expect(b.state).toBe('closed')
    expect(b.admits()).toBe(true)
    b.record('success')
    expect(changes).toEqual(['open', 'half-open', 'closed'])
  })

  it('a failed probe opens the breaker again, for another resetTimeout', async () => {
    const { b, changes } = breaker(config({ volumeThreshold: 1, resetTimeout: 100 }))
    request(b, 'timeout')
    await vi.waitFor(() => expect(b.state).toBe('half-open'), { timeout: 2000, interval: 10 })
    request(b, 'connect-error')
    await settled()
    expect(b.state).toBe('open')
    await vi.waitFor(() => expect(b.state).toBe('half-open'), { timeout: 2000, interval: 10 })
    expect(changes).toEqual(['open', 'half-open', 'open', 'half-open'])
  })

  it('forgets failures older than the rolling window', async () => {
    const { b } = breaker(config({ volumeThreshold: 2, rollingCountTimeout: 1_000 }))
    request(b, 'server-error')
    await new Promise((resolve) => setTimeout(resolve, 1_150))
    request(b, 'server-error')
    await settled()
    expect(b.state).toBe('closed') // the first failure left the window: one request in it
    request(b, 'server-error')
    await settled()
    expect(b.state).toBe('open')
  })

  it('force() sets the state and tells onChange; a forced open half-opens after resetTimeout', async () => {
    const { b, changes } = breaker(config({ resetTimeout: 100 }))
    b.force('open')
    expect(b.state).toBe('open')
    expect(b.admits()).toBe(false)
    b.force('closed')
    expect(b.state).toBe('closed')
    b.force('open')
    await vi.waitFor(() => expect(b.state).toBe('half-open'), { timeout: 2000, interval: 10 })
    expect(changes).toEqual(['open', 'closed', 'open', 'half-open'])
  })

  it('a request admitted before the breaker opened is still counted when it ends', async () => {
    const { b } = breaker(config({ volumeThreshold: 1 }))
    expect(b.admits()).toBe(true) // a slow request
    b.force('open')
    b.force('closed')
    b.record('server-error') // it ends after all that: a failure of the window
    await settled()
    expect(b.state).toBe('open')
  })

  it('an onChange that throws reaches neither the caller nor the reset timer', async () => {
    const errors: unknown[] = []
    const onError = (err: unknown) => errors.push(err)
    process.on('uncaughtException', onError)
    try {
      const b = createBreaker(config({ volumeThreshold: 1, resetTimeout: 100 }), () => {
        throw new Error('listener')
      })
      opened.push(b)
      b.force('open')
      await vi.waitFor(() => expect(b.state).toBe('half-open'), { timeout: 2000, interval: 10 })
      request(b, 'success')
      await settled()
      expect(b.state).toBe('closed')
      expect(errors).toEqual([])
    } finally {
      process.off('uncaughtException', onError)
    }
  })

  it('close() stops it: nothing admitted, outcomes ignored, no timer left', () => {
    // opossum's timers are unref'd (invisible to getActiveResourcesInfo): counted on fake timers instead.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] })
    try {
      const b = createBreaker(config({ resetTimeout: 60_000 }))
      expect(b.admits()).toBe(true)
      b.force('open') // the reset timer runs, beside the rolling window's
      expect(vi.getTimerCount()).toBeGreaterThan(1)
      b.close()
      expect(vi.getTimerCount()).toBe(0)
      expect(b.admits()).toBe(false)
      expect(b.ready).toBe(false)
      b.record('success')
      expect(b.state).toBe('open')
    } finally {
      vi.useRealTimers()
    }
  })
})
