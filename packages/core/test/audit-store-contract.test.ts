/**
 * One contract for every audit store, run over each: memory, SQLite (a real temp file
 * through better-sqlite3), Redis Streams on the test Redis and on a real Redis Cluster
 * of three masters. Each case writes through `createAuditLog`, the way an instance
 * does, and reads back through the public trail.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest'
import { auditSchema, createAuditLog, type AuditLog, type AuditOptions } from '../src/audit/index.js'
import { createWarnOnce } from '../src/kernel/warnings.js'
import { connectStore, storeSchema, type RedisConnection, type StoreOptions } from '../src/store/index.js'
import { useRedisCluster } from '../../../test/helpers/redis-cluster.js'
import { sqliteLoads } from './audit-helpers.js'

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined }
const warn = createWarnOnce(silent)
const clusterNodes = useRedisCluster()
const dir = mkdtempSync(join(tmpdir(), 'aegis-audit-'))
const connections: RedisConnection[] = []
const logs: AuditLog[] = []
afterEach(async () => {
  await Promise.all(logs.splice(0).map((l) => l.close()))
})
afterAll(async () => {
  await Promise.all(connections.splice(0).map((c) => c.close()))
  rmSync(dir, { recursive: true, force: true })
})

const connect = async (options: StoreOptions): Promise<RedisConnection> => {
  const conn = connectStore(storeSchema.parse({ ...options, prefix: `aegis-test:${randomUUID()}:` }), silent)
  if (conn === undefined) throw new Error('no Redis configured')
  connections.push(conn)
  await conn.started
  return conn
}

type Made = { log: AuditLog; raw: () => Promise<string> }
type Make = (options?: AuditOptions) => Made | Promise<Made>

const stores: [string, Make][] = [
  [
    'memory',
    (options = {}) => {
      const log = createAuditLog(auditSchema.parse(options), warn)
      logs.push(log)
      return { log, raw: async () => JSON.stringify((await log.query({ limit: 1000 })).entries) }
    },
  ],
  [
    'sqlite',
    (options = {}) => {
      const file = join(dir, `${randomUUID()}.db`)
      const log = createAuditLog(auditSchema.parse({ ...options, store: { sqlite: file } }), warn)
      logs.push(log)
      return {
        log,
        raw: async () => {
          await log.flush()
          return ['', '-wal'].map((s) => readFileSync(file + s).toString('latin1')).join('')
        },
      }
    },
  ],
  ...(['redis', 'cluster'] as const).map((kind): [string, Make] => [
    kind,
    async (options = {}) => {
      const conn = await connect(
        kind === 'redis' ? { redis: inject('redisUrl') } : { cluster: clusterNodes(), commandTimeout: 1_000 },
      )
      const log = createAuditLog(auditSchema.parse({ ...options, store: 'redis' }), warn, { store: conn })
      logs.push(log)
      return {
        log,
        raw: async () => {
          await log.flush()
          const entries = await (conn.client as unknown as Redis).xrange(
            `${conn.prefix}{audit:main}:log`,
            '-',
            '+',
          )
          return JSON.stringify(entries)
        },
      }
    },
  ]),
]

const health = (upstream: string, healthy: boolean) =>
  ({ type: 'upstream.health', route: 'api', upstream, healthy }) as const
const admin = (action: string, actor: string, source: string) =>
  ({ type: 'admin.action', action, actor, role: 'admin', source, requestId: randomUUID() }) as const

describe.each(stores)('audit store contract: %s', (name, make) => {
  it.skipIf(name === 'sqlite' && !sqliteLoads)(
    'numbers, chains and finds entries by type, actor, client, route and time',
    async () => {
      const { log } = await make()
      log.record(health('a', false))
      log.record(admin('config.apply', 'ops', '10.0.0.1'))
      log.record(health('b', true))
      log.record(admin('upstream.drain', 'alice', '10.0.0.2'))
      log.record({ type: 'proxy.chaos', route: 'web', chaos: false })
      const page = await log.query()
      expect(page.version).toBe(1)
      expect(page.entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5])
      expect(page.next).toBeNull()
      const [first, second] = page.entries
      expect(first).toMatchObject({
        version: 1,
        type: 'upstream.health',
        data: { upstream: 'a', healthy: false },
      })
      expect(first?.prev).toBe('0'.repeat(64))
      expect(second?.prev).toBe(first?.hash)
      expect(second?.hash).toMatch(/^[0-9a-f]{64}$/)

      const seqs = async (q: Parameters<AuditLog['query']>[0]) =>
        (await log.query(q)).entries.map((e) => e.seq)
      expect(await seqs({ types: ['admin.action'] })).toEqual([2, 4])
      expect(await seqs({ actor: 'alice' })).toEqual([4])
      expect(await seqs({ client: '10.0.0.1' })).toEqual([2])
      expect(await seqs({ route: 'web' })).toEqual([5])
      expect(await seqs({ route: 'api', types: ['upstream.health'] })).toEqual([1, 3])
      expect(await seqs({ from: Date.now() - 60_000, to: new Date(Date.now() + 60_000) })).toEqual([
        1, 2, 3, 4, 5,
      ])
      expect(await seqs({ from: new Date(Date.now() + 60_000).toISOString() })).toEqual([])

      // Paged by seq, both ways.
      const p1 = await log.query({ limit: 2 })
      expect(p1.entries.map((e) => e.seq)).toEqual([1, 2])
      const p2 = await log.query({ limit: 2, after: p1.next ?? -1 })
      expect(p2.entries.map((e) => e.seq)).toEqual([3, 4])
      const d1 = await log.query({ limit: 2, order: 'desc' })
      expect(d1.entries.map((e) => e.seq)).toEqual([5, 4])
      expect(
        (await log.query({ limit: 2, order: 'desc', before: d1.next ?? -1 })).entries.map((e) => e.seq),
      ).toEqual([3, 2])
      await expect(log.query({ limit: 0 })).rejects.toThrow(/limit/)
      await expect(log.query({ from: 'yesterday' })).rejects.toThrow(/from/)

      const stats = await log.stats()
      expect(stats).toMatchObject({
        version: 1,
        trail: 'main',
        store: name === 'cluster' ? 'redis' : name,
        entries: 5,
        byType: { 'upstream.health': 2, 'admin.action': 2, 'proxy.chaos': 1 },
        first: { seq: 1 },
        last: { seq: 5 },
        pending: 0,
        dropped: 0,
        writeFailures: 0,
      })
      if (name !== 'memory') expect(stats.bytes).toBeGreaterThan(0)
      expect(await log.verify()).toMatchObject({ version: 1, ok: true, first: 1, last: 5, entries: 5 })
    },
  )

  it.skipIf(name === 'sqlite' && !sqliteLoads)(
    'signs checkpoints: an Ed25519 public key alone verifies them, a wrong key is named',
    async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519')
      const secret = 'an HMAC secret of at least thirty-two bytes'
      const { log } = await make({ checkpoint: { every: 3, privateKey, secret } })
      for (let i = 0; i < 7; i++) log.record(health(`u${i}`, i % 2 === 0))
      await log.flush()
      const checkpoints = await log.checkpoints()
      expect(checkpoints.map((c) => c.seq)).toEqual([3, 6])
      expect(checkpoints[0]?.signatures).toEqual({
        'hmac-sha256': expect.any(String),
        ed25519: expect.any(String),
      })
      expect(await log.verify({ publicKey })).toMatchObject({
        ok: true,
        checkpoints: 2,
        signatures: 'checked',
      })
      expect(await log.verify({})).toMatchObject({ ok: true, signatures: 'unchecked' })
      expect(await log.verify({ secret: 'another secret of thirty-two bytes, wrong' })).toMatchObject({
        ok: false,
        seq: 3,
        reason: 'bad-signature',
      })
      const other = generateKeyPairSync('ed25519').publicKey
      expect(await log.verify({ publicKey: other })).toMatchObject({
        ok: false,
        seq: 3,
        reason: 'bad-signature',
      })
    },
  )

  it.skipIf(name === 'sqlite' && !sqliteLoads)(
    'keeps to its retention by count, and the kept part still verifies from its anchor',
    async () => {
      const secret = 'an HMAC secret of at least thirty-two bytes'
      const { log } = await make({
        size: 1_000,
        retention: { maxEntries: 4 },
        checkpoint: { every: 2, secret },
      })
      for (let i = 0; i < 10; i++) log.record(health(`u${i}`, true))
      await log.flush()
      expect(await log.prune()).toBe(6)
      const page = await log.query()
      expect(page.entries.map((e) => e.seq)).toEqual([7, 8, 9, 10])
      expect(await log.verify()).toMatchObject({ ok: true, first: 7, last: 10, entries: 4 })
      expect((await log.stats()).entries).toBe(4)
      // The chain goes on after the cut.
      log.record(health('after', false))
      await log.flush()
      expect((await log.query({ after: 10 })).entries.map((e) => e.seq)).toEqual([11])
      expect(await log.verify()).toMatchObject({ ok: true, first: 7, last: 11 })
    },
  )

  it.skipIf(name === 'sqlite' && !sqliteLoads)(
    'keeps no secret: not in the store, not in a query, not in entries()',
    async () => {
      const { log, raw } = await make()
      log.record({
        ...admin('config.apply', 'ops', '10.0.0.1'),
        target: 'https://user:hunter2-url@example.com/x?token=hunter2-query&page=2',
        diff: [
          { op: 'replace', path: '/admin/token', value: 'hunter2-token' },
          { op: 'replace', path: '/store/redis', value: 'redis://:hunter2-redis@10.0.0.9:6379' },
          {
            op: 'add',
            path: '/proxy/0/headers',
            value: { authorization: 'Bearer hunter2-bearer', 'x-ok': 'fine' },
          },
        ],
        error:
          'upstream said Authorization: Basic aHVudGVyMjpodW50ZXIy and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl',
      } as never)
      const texts = [await raw(), JSON.stringify(await log.query()), JSON.stringify(log.entries())]
      for (const text of texts) {
        expect(text).not.toMatch(/hunter2|aHVudGVyMj|eyJzdWIiOiIxIn0/)
        expect(text).toContain('[redacted]')
      }
      const [entry] = (await log.query()).entries
      expect(entry?.data).toMatchObject({
        target: 'https://***@example.com/x?token=[redacted]&page=2',
        diff: [
          { op: 'replace', path: '/admin/token', value: '[redacted]' },
          { op: 'replace', path: '/store/redis', value: 'redis://***@10.0.0.9:6379' },
          { op: 'add', path: '/proxy/0/headers', value: { authorization: '[redacted]', 'x-ok': 'fine' } },
        ],
      })
      expect(await log.verify()).toMatchObject({ ok: true })
    },
  )
})
