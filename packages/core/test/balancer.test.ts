import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { createBalancer, type BalancerConfig, type UpstreamHost } from '../src/balancer/index.js'
import { RetryBudget, retryAfterMs } from '../src/gateway/retry.js'

const base: BalancerConfig = {
  balancer: 'round-robin',
  healthCheck: false,
  outlier: {
    consecutive5xx: 5,
    consecutiveConnectErrors: 3,
    consecutiveLocalFailures: 5,
    baseEjectionTime: 30_000,
    maxEjectionPercent: 50,
    maxEjectionTime: 300_000,
  },
  breaker: false,
  slowStart: 0,
  panicThreshold: 50,
}
const req = (headers: Record<string, string> = {}) => ({ headers }) as unknown as IncomingMessage
const hostsOf = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `h${i}`, weight: 1 }))
const tally = (picks: (string | undefined)[]) =>
  picks.reduce<Record<string, number>>((t, id) => ({ ...t, [id ?? '-']: (t[id ?? '-'] ?? 0) + 1 }), {})

describe('balancer', () => {
  it('least-request sends new requests to the host with fewer in flight', () => {
    const b = createBalancer(hostsOf(2), { ...base, balancer: 'least-request' })
    const [h0] = b.hosts
    for (let i = 0; i < 5; i++) b.begin(h0!)
    for (let i = 0; i < 50; i++) expect(b.pick(req(), 'c')?.id).toBe('h1')
  })

  it('peak-EWMA prefers the faster host, and reacts at once to a latency spike', () => {
    const b = createBalancer(hostsOf(2), { ...base, balancer: 'peak-ewma' })
    const [h0, h1] = b.hosts
    for (let i = 0; i < 5; i++) {
      b.begin(h0!)
      b.end(h0!, 'success', 5)
      b.begin(h1!)
      b.end(h1!, 'success', 50)
    }
    const picks = tally(Array.from({ length: 100 }, () => b.pick(req(), 'c')?.id))
    expect(picks.h0).toBe(100)
    b.begin(h0!)
    b.end(h0!, 'success', 500) // peak: the cost jumps up, it does not average in slowly
    expect(tally(Array.from({ length: 100 }, () => b.pick(req(), 'c')?.id)).h1).toBe(100)
  })

  it('consistent hashing keeps a key on its host and moves only the keys of a host that leaves', () => {
    const b = createBalancer(hostsOf(4), { ...base, balancer: { hash: { header: 'x-user' } } })
    const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`)
    const before = keys.map((k) => b.pick(req({ 'x-user': k }), 'c')?.id)
    expect(keys.map((k) => b.pick(req({ 'x-user': k }), 'c')?.id)).toEqual(before)
    const spread = tally(before)
    for (const id of ['h0', 'h1', 'h2', 'h3']) expect(spread[id]).toBeGreaterThan(350)
    const gone = b.hosts[2]!
    const after = keys.map((k) => b.pick(req({ 'x-user': k }), 'c', new Set([gone]))?.id)
    for (let i = 0; i < keys.length; i++) {
      if (before[i] === 'h2') expect(after[i]).not.toBe('h2')
      else expect(after[i]).toBe(before[i])
    }
  })

  it('ejects after consecutive connection errors, at most maxEjectionPercent of the hosts', () => {
    const b = createBalancer(hostsOf(4), base)
    for (const h of b.hosts)
      for (let i = 0; i < 3; i++) {
        b.begin(h)
        b.end(h, 'connect-error', 1)
      }
    const ejected = b.hosts.filter((h) => h.ejectedUntil > performance.now())
    expect(ejected).toHaveLength(2) // 50% of 4
    const picks = new Set(Array.from({ length: 40 }, () => b.pick(req(), 'c')?.id))
    expect(picks).toEqual(new Set(b.hosts.filter((h) => !ejected.includes(h)).map((h) => h.id)))
  })

  it('ejects after consecutive timeouts and resets; an answer in between starts the count again', () => {
    const b = createBalancer(hostsOf(2), base)
    const [h0] = b.hosts
    const fail = (outcome: 'timeout' | 'error', n: number) => {
      for (let i = 0; i < n; i++) {
        b.begin(h0!)
        b.end(h0!, outcome, 1)
      }
    }
    fail('timeout', 4)
    b.begin(h0!)
    b.end(h0!, 'success', 1)
    fail('error', 4)
    expect(h0!.ejectedUntil).toBe(0)
    fail('timeout', 1) // the fifth local failure in a row
    expect(h0!.ejectedUntil).toBeGreaterThan(performance.now())
    expect(new Set(Array.from({ length: 10 }, () => b.pick(req(), 'c')?.id))).toEqual(new Set(['h1']))
  })

  it('panics below the threshold: spreads over every host rather than overload the last ones', () => {
    const b = createBalancer(hostsOf(4), {
      ...base,
      outlier: { ...(base.outlier as object), maxEjectionPercent: 100 } as never,
    })
    const [h0, h1, h2] = b.hosts
    for (const h of [h0!, h1!, h2!])
      for (let i = 0; i < 3; i++) {
        b.begin(h)
        b.end(h, 'connect-error', 1)
      }
    // One host of four available: 25% < 50%, so all four take traffic.
    expect(new Set(Array.from({ length: 40 }, () => b.pick(req(), 'c')?.id)).size).toBe(4)
  })

  it('skips hosts whose breaker is open, and answers none when every breaker is', async () => {
    const b = createBalancer(hostsOf(2), {
      ...base,
      breaker: {
        errorThresholdPercentage: 50,
        volumeThreshold: 1,
        resetTimeout: 60_000,
        rollingCountTimeout: 10_000,
        shared: false,
      },
    })
    // One request admitted and failed (a 5xx): opossum decides in promise callbacks, a tick later.
    const fail = (h: UpstreamHost) => {
      if (h.breaker!.admits()) h.breaker!.record('server-error')
      return new Promise((r) => setImmediate(r))
    }
    await fail(b.hosts[0]!)
    expect(new Set(Array.from({ length: 10 }, () => b.pick(req(), 'c')?.id))).toEqual(new Set(['h1']))
    await fail(b.hosts[1]!)
    expect(b.pick(req(), 'c')).toBeUndefined()
    b.close()
  })

  it('each ejection lasts longer, until the host behaves for the longest ejection', () => {
    const b = createBalancer(hostsOf(1), base)
    const h = b.hosts[0]!
    expect(h.eject(0, 1_000, 10_000)).toBe(1_000)
    expect(h.eject(2_000, 1_000, 10_000)).toBe(2_000)
    expect(h.eject(5_000, 1_000, 10_000)).toBe(3_000)
    // In rotation from 8,000 until 18,000 and later: back to the first length.
    expect(h.eject(18_000, 1_000, 10_000)).toBe(1_000)
  })

  it('slow start ramps a recovered host from 10% of its weight', () => {
    const b = createBalancer(hostsOf(1), { ...base, slowStart: 10_000, healthCheck: false })
    const h = b.hosts[0]!
    const now = performance.now()
    h.healthy = false
    expect(h.check(true, 1, 1, now)).toBe(true)
    expect(h.effectiveWeightAt(now)).toBeCloseTo(0.1)
    expect(h.effectiveWeightAt(now + 5_000)).toBeCloseTo(0.5)
    expect(h.effectiveWeightAt(now + 10_000)).toBe(1)
  })
})

describe('retry budget', () => {
  it('allows retries up to 20% of requests in flight, at least 3', () => {
    const budget = new RetryBudget(20, 3)
    budget.active = 5
    expect([budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire()]).toEqual([
      true,
      true,
      true,
      false,
    ])
    budget.active = 100
    for (let i = 0; i < 17; i++) expect(budget.tryAcquire()).toBe(true)
    expect(budget.tryAcquire()).toBe(false)
    budget.release()
    expect(budget.tryAcquire()).toBe(true)
  })

  it('reads Retry-After as seconds or a date', () => {
    expect(retryAfterMs('3')).toBe(3000)
    expect(retryAfterMs(new Date(Date.now() + 2000).toUTCString())).toBeGreaterThan(900)
    expect(retryAfterMs('soon')).toBeUndefined()
    expect(retryAfterMs(undefined)).toBeUndefined()
  })
})
