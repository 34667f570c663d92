import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { auditSchema, createAuditLog, type AuditEvent } from '../src/audit/index.js'
import { AegisConfigError, AegisError, createAegis, WarningCodes } from '../src/index.js'
import { createEventBus } from '../src/kernel/events.js'
import { createWarnOnce } from '../src/kernel/warnings.js'

const health = (upstream: string, healthy: boolean): AuditEvent => ({
  type: 'upstream.health',
  route: '/api',
  upstream,
  healthy,
})

// Warnings as an instance gives them: once per code, through its logger.
let warnings: [unknown, string | undefined][] = []
let warn = createWarnOnce(undefined)
beforeEach(() => {
  warnings = []
  warn = createWarnOnce({
    info: () => undefined,
    error: () => undefined,
    warn: (obj, msg) => void warnings.push([(obj as { code?: string }).code, msg]),
  })
})

afterEach(() => vi.useRealTimers())

describe('audit log', () => {
  it('numbers and timestamps entries, and reads them back oldest first by seq, type and limit', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 23, 12, 0, 0) })
    const audit = createAuditLog(auditSchema.parse({}), warn)
    expect(audit.last).toBe(0)
    expect(audit.entries()).toEqual([])
    audit.record(health('a', false))
    vi.advanceTimersByTime(1500)
    audit.record({ type: 'proxy.chaos', route: '/api', chaos: { abort: { percent: 5, status: 503 } } })
    audit.record(health('a', true))
    expect(audit.last).toBe(3)
    expect(audit.entries()).toEqual([
      { seq: 1, time: '2026-11-23T12:00:00.000Z', ...health('a', false) },
      {
        seq: 2,
        time: '2026-11-23T12:00:01.500Z',
        type: 'proxy.chaos',
        route: '/api',
        chaos: { abort: { percent: 5, status: 503 } },
      },
      { seq: 3, time: '2026-11-23T12:00:01.500Z', ...health('a', true) },
    ])
    expect(audit.entries({ after: 1 }).map((e) => e.seq)).toEqual([2, 3])
    expect(audit.entries({ types: ['upstream.health'] }).map((e) => e.healthy)).toEqual([false, true])
    expect(audit.entries({ limit: 2 }).map((e) => e.seq)).toEqual([1, 2])
    expect(audit.entries({ after: 3 })).toEqual([])
  })

  it('keeps the newest `size` entries; the gap in seq shows what fell out', () => {
    const audit = createAuditLog(auditSchema.parse({ size: 3 }), warn)
    for (let i = 1; i <= 7; i++) audit.record(health(`u${i}`, true))
    expect(audit.entries({ types: ['upstream.health'] }).map((e) => [e.seq, e.upstream])).toEqual([
      [5, 'u5'],
      [6, 'u6'],
      [7, 'u7'],
    ])
    // A reader that last saw seq 2 gets what is left; `first` tells it seq 3 and 4 fell out.
    expect(audit.first).toBe(5)
    expect(audit.entries({ after: 2 }).map((e) => e.seq)).toEqual([5, 6, 7])
    expect(audit.entries({ after: 6 }).map((e) => e.seq)).toEqual([7])
    // Types and limit together, across the wrap of the ring.
    audit.record({ type: 'upstream.ejected', route: '/api', upstream: 'u8', ms: 30_000 })
    audit.record(health('u9', false))
    expect(audit.entries({ types: ['upstream.health'], limit: 2 }).map((e) => e.seq)).toEqual([7, 9])
    expect(audit.entries({ types: ['upstream.ejected'] }).map((e) => e.ms)).toEqual([30_000])
  })

  it('starts empty with first = last + 1, and refuses queries it cannot answer', () => {
    const audit = createAuditLog(auditSchema.parse({}), warn)
    expect([audit.first, audit.last]).toEqual([1, 0])
    audit.record(health('a', true))
    expect([audit.first, audit.last]).toEqual([1, 1])
    for (const bad of [{ after: 0.5 }, { after: -1 }, { after: '1' }, { after: Number.NaN }, { limit: 1.5 }])
      expect(() => audit.entries(bad as never), JSON.stringify(bad)).toThrow(TypeError)
    expect(() => audit.entries({ types: 'upstream.health' } as never)).toThrow(/types must be an array/)
    // A coded AegisError too, with the status an admin API answers it with.
    const err = (() => {
      try {
        audit.entries({ after: -1 })
      } catch (e) {
        return e
      }
    })()
    expect(AegisError.is(err)).toBe(true)
    expect(err).toBeInstanceOf(AegisError)
    expect(err).toMatchObject({ code: 'AEGIS_ERR_INVALID_ARGUMENT', status: 400, name: 'AegisArgumentError' })
    expect(audit.entries({ limit: 0 })).toEqual([])
  })

  it('keeps entries apart from the objects they were made from and frozen against readers', () => {
    const audit = createAuditLog(auditSchema.parse({}), warn)
    const chaos = { delay: { percent: 10, ms: 100 } }
    audit.record({ type: 'proxy.chaos', route: '/api', chaos })
    chaos.delay.percent = 90
    const [entry] = audit.entries({ types: ['proxy.chaos'] })
    expect(entry?.chaos).toEqual({ delay: { percent: 10, ms: 100 } })
    expect(Object.isFrozen(entry)).toBe(true)
    expect(Object.isFrozen((entry?.chaos as typeof chaos).delay)).toBe(true)
  })

  it('hands each entry to the sink; a throwing or rejecting sink is counted, warned about once, and loses nothing', async () => {
    const seen: number[] = []
    let mode: 'ok' | 'throw' | 'reject' = 'ok'
    const audit = createAuditLog(
      auditSchema.parse({
        sink: (entry: { seq: number }) => {
          seen.push(entry.seq)
          if (mode === 'throw') throw new Error('disk full')
          if (mode === 'reject') return Promise.reject(new Error('SIEM down'))
        },
      }),
      warn,
    )
    audit.record(health('a', false))
    mode = 'throw'
    expect(() => audit.record(health('a', true))).not.toThrow()
    mode = 'reject'
    audit.record(health('b', false))
    await new Promise((r) => setImmediate(r))
    expect(seen).toEqual([1, 2, 3])
    expect(audit.sinkFailures).toBe(2)
    expect(warnings).toEqual([[WarningCodes.AUDIT_SINK_FAILED, expect.stringContaining('disk full')]])
    expect(audit.entries().map((e) => e.seq)).toEqual([1, 2, 3])
  })

  it('counts a sink failure once per entry and never throws into the recorder, even through a throwing logger', () => {
    const throwingWarn = createWarnOnce({
      info: () => undefined,
      error: () => undefined,
      warn: () => {
        throw new Error('logger down')
      },
    })
    const audit = createAuditLog(
      auditSchema.parse({
        // A thenable that rejects and then throws: one failure, not two.
        sink: () => ({
          then(_ok: unknown, fail: (err: Error) => void) {
            fail(new Error('rejected'))
            throw new Error('and thrown')
          },
        }),
      }),
      throwingWarn,
    )
    expect(() => audit.record(health('a', false))).not.toThrow()
    expect(audit.sinkFailures).toBe(1)
    expect(audit.entries()).toHaveLength(1)
  })

  it('is on by default, off with `audit: false`, and refuses bad options naming them', async () => {
    const on = createAegis({ limiter: false })
    expect(on.audit?.entries()).toEqual([])
    const off = createAegis({ limiter: false, audit: false })
    expect(off.audit).toBeUndefined()
    await Promise.all([on.close(), off.close()])
    expect(() => createAegis({ audit: { size: 0 } })).toThrow(AegisConfigError)
    expect(() => createAegis({ audit: { size: 0 } })).toThrow(/audit\.size/)
    expect(() => createAegis({ audit: { sink: 'file.log' } as never })).toThrow(/audit\.sink/)
    expect(() => createAegis({ audit: { path: '/tmp/x' } as never })).toThrow(/audit\.path/)
  })
})

describe('security events, counted per minute, client and reason', () => {
  const blocked = (client: string, policy = 'global') =>
    ({ client, reason: 'limited', policies: [policy], status: 429, path: '/login' }) as const

  it('keeps 10,000 blocks of one client in one minute as one entry with their count', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 23, 12, 0, 5) })
    const bus = createEventBus(() => undefined)
    const audit = createAuditLog(auditSchema.parse({}), warn, { events: bus })
    for (let i = 0; i < 10_000; i++) {
      bus.emit('limiter.blocked', blocked('203.0.113.7'))
      if (i % 1_000 === 0) vi.advanceTimersByTime(5_000)
    }
    bus.emit('limiter.blocked', blocked('198.51.100.1', 'login'))
    expect(audit.entries()).toEqual([])
    expect((await audit.stats()).counting).toBe(2)
    vi.advanceTimersByTime(60_000)
    const entries = audit.entries()
    expect(entries).toHaveLength(2)
    expect(entries[0]).toMatchObject({
      seq: 1,
      type: 'limiter.blocked',
      client: '203.0.113.7',
      reason: 'limited:global',
      count: 10_000,
      route: '/login',
      minute: '2026-11-23T12:00:00.000Z',
      firstAt: '2026-11-23T12:00:05.000Z',
      sample: { client: '203.0.113.7', policies: ['global'], status: 429 },
    })
    expect(entries[1]).toMatchObject({ client: '198.51.100.1', reason: 'limited:login', count: 1 })
    expect(await audit.verify()).toMatchObject({ ok: true, entries: 2 })
    await audit.close()
  })

  it('gives at most maxClients clients a minute their own entry, the rest one under `*`', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 23, 12, 0, 0) })
    const bus = createEventBus(() => undefined)
    const audit = createAuditLog(auditSchema.parse({ security: { maxClients: 3 } }), warn, { events: bus })
    for (let i = 0; i < 1_000; i++)
      bus.emit('limiter.blocked', blocked(`10.0.${Math.floor(i / 250)}.${i % 250}`))
    bus.emit('anomaly.blocked', {
      key: '10.9.9.0/24',
      score: 0.9,
      reasons: ['rule:flood'],
      strikes: 1,
      coolDownMs: 1,
      until: 1,
    })
    await audit.close()
    const entries = audit.entries()
    expect(entries.map((e) => ('client' in e ? [e.client, 'count' in e ? e.count : 0] : []))).toEqual([
      ['10.0.0.0', 1],
      ['10.0.0.1', 1],
      ['10.0.0.2', 1],
      ['*', 997],
      ['*', 1],
    ])
    expect(entries[3]).toMatchObject({ clients: 997 })
    expect(entries[4]).toMatchObject({ type: 'anomaly.blocked', reason: 'rule:flood' })
  })

  it("counts the limiter's real refusals, over real sockets", async () => {
    const aegis = createAegis({ limiter: { points: 2, duration: 60, burst: 2 }, anomaly: false })
    const server = createServer(aegis.handler((_req, res) => res.end('ok')))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/things?token=hunter2`
    const statuses: number[] = []
    for (let i = 0; i < 12; i++) statuses.push((await fetch(url)).status)
    expect(statuses.filter((s) => s === 429)).toHaveLength(10)
    await new Promise<void>((r) => server.close(() => r()))
    // close() counts the minute not over yet.
    await aegis.close()
    const entries = aegis.audit?.entries({ types: ['limiter.blocked'] }) ?? []
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({
      client: '127.0.0.1',
      reason: 'limited:default',
      count: 10,
      route: '/things',
    })
    expect(JSON.stringify(entries)).not.toContain('hunter2')
  })
})
