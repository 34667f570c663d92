/**
 * One audit trail in a Redis stream, written by two Aegis instances at once (the test
 * Redis, a key prefix of its own per test): one chain, seq without gaps, each sees the
 * other's entries, `verify` passes, and a rewritten stream entry is named.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { createAegis, type Aegis } from '../src/index.js'

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined }
const instances: Aegis[] = []
afterEach(async () => {
  await Promise.all(instances.splice(0).map((a) => a.close()))
})

const twoInstances = (prefix = `aegis-test:${randomUUID()}:`) =>
  (['a', 'b'] as const).map((writer) => {
    const aegis = createAegis({
      limiter: false,
      logger: silent,
      store: { redis: inject('redisUrl'), prefix },
      audit: {
        store: 'redis',
        writer,
        checkpoint: { every: 25, secret: 'an HMAC secret of at least thirty-two bytes' },
      },
    })
    instances.push(aegis)
    return aegis
  })

const act = (aegis: Aegis, i: number): void =>
  aegis.events.emit('admin.action', {
    action: 'upstream.drain',
    actor: `op${i % 3}`,
    role: 'admin',
    source: '127.0.0.1',
    requestId: `r${i}`,
    target: `http://10.0.0.${i % 250}:8080`,
  })

describe('audit trail in Redis Streams, shared', () => {
  it('is one chain for two writers at once: no gap, both see both, verify passes', async () => {
    const [a, b] = twoInstances()
    if (a?.audit === undefined || b?.audit === undefined) throw new Error('no audit')
    // Interleaved, and in bursts, so each writer's batches race the other's.
    for (let i = 0; i < 200; i++) act(i % 2 === 0 ? a : b, i)
    await new Promise((r) => setImmediate(r))
    for (let i = 200; i < 300; i++) act(i < 250 ? a : b, i)
    await Promise.all([a.audit.flush(), b.audit.flush()])
    const all = []
    let after = 0
    for (;;) {
      const page = await b.audit.query({ after, limit: 1000 })
      all.push(...page.entries)
      if (page.next === null) break
      after = page.next
    }
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
    expect(new Set(all.map((e) => e.writer))).toEqual(new Set(['a', 'b']))
    expect(all.filter((e) => e.writer === 'a')).toHaveLength(150)
    // Each sees the other's: a's view equals b's.
    expect((await a.audit.query({ limit: 1000 })).entries).toEqual(all)
    expect((await a.audit.query({ actor: 'op1', limit: 1000 })).entries).toHaveLength(100)
    expect(await a.audit.verify()).toMatchObject({
      ok: true,
      first: 1,
      last: 300,
      entries: 300,
      signatures: 'checked',
    })
    expect((await b.audit.checkpoints()).length).toBeGreaterThanOrEqual(6)
    expect(await b.audit.stats()).toMatchObject({
      entries: 300,
      byType: { 'admin.action': 300 },
      store: 'redis',
    })
  })

  it('names an entry rewritten in the stream, and one deleted from it', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const [a, b] = twoInstances(prefix)
    if (a?.audit === undefined || b?.audit === undefined) throw new Error('no audit')
    for (let i = 0; i < 40; i++) act(i % 2 === 0 ? a : b, i)
    await Promise.all([a.audit.flush(), b.audit.flush()])
    const redis = a.store?.client as unknown as Redis
    const log = `${prefix}{audit:main}:log`
    // A stream entry cannot be edited in place: the stream is rebuilt with seq 17 changed.
    const entries = (await redis.xrange(log, '-', '+')) as [string, string[]][]
    await redis.del(log)
    for (const [id, [field, value]] of entries) {
      const text = id === '17-0' ? (value ?? '').replace('"actor":"op', '"actor":"intruder') : (value ?? '')
      await redis.xadd(log, id, field ?? 'r', text)
    }
    expect(await b.audit.verify()).toMatchObject({ ok: false, seq: 17, reason: 'hash-mismatch', entries: 16 })
    await redis.xdel(log, '17-0')
    expect(await b.audit.verify()).toMatchObject({ ok: false, seq: 17, reason: 'missing' })
  })

  it('goes on with the chain when an instance restarts', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const [a] = twoInstances(prefix)
    if (a?.audit === undefined) throw new Error('no audit')
    for (let i = 0; i < 10; i++) act(a, i)
    await a.close()
    const [again] = twoInstances(prefix)
    if (again?.audit === undefined) throw new Error('no audit')
    for (let i = 10; i < 15; i++) act(again, i)
    await again.audit.flush()
    const page = await again.audit.query()
    expect(page.entries.map((e) => e.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1))
    expect(await again.audit.verify()).toMatchObject({ ok: true, last: 15 })
  })

  it('is refused without a store option, naming audit.store', () => {
    expect(() => createAegis({ audit: { store: 'redis' } })).toThrow(
      /audit\.store: audit\.store 'redis' needs the store option/,
    )
  })
})
