/**
 * One contract for every `GhostStore`, run over each implementation: memory, a real
 * Redis (127.0.0.1:6379) and a real Redis Cluster of three masters.
 */
import { randomUUID } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { baseKey } from '../src/ghost/key.js'
import type { GhostEntry, GhostStore } from '../src/ghost/store.js'
import { entryBytes } from '../src/ghost/store.js'
import { createMemoryStore } from '../src/ghost/stores/memory.js'
import { createRedisStore } from '../src/ghost/stores/redis.js'
import { connectStore, storeSchema, type RedisConnection, type StoreOptions } from '../src/store/index.js'
import { useRedisCluster } from '../../../test/helpers/redis-cluster.js'
import { startRedisServer } from '../../../test/helpers/redis.js'
import { sleep } from '../../../test/helpers/wait.js'

const entry = (over: Partial<GhostEntry> = {}): GhostEntry => ({
  status: 200,
  headers: { 'content-type': 'text/plain', etag: '"v1"' },
  body: Buffer.from('learned'),
  receivedAt: Date.now(),
  lifetimeMs: 60_000,
  ageMs: 0,
  vary: [],
  varyValues: [],
  staleForbidden: false,
  expiresAt: Date.now() + 60_000,
  ...over,
})

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined }
const clusterNodes = useRedisCluster()
const connections: RedisConnection[] = []
afterAll(async () => {
  await Promise.all(connections.splice(0).map((c) => c.close()))
})

/** A store on Aegis' own connection to a Redis or a Cluster, under a key prefix of its own. */
async function onRedis(options: StoreOptions, bounds: Bounds = {}): Promise<GhostStore> {
  const conn = connectStore(storeSchema.parse({ ...options, prefix: `aegis-test:${randomUUID()}:` }), silent)
  if (conn === undefined) throw new Error('no Redis configured')
  connections.push(conn)
  await conn.started
  // The byte bound of a shared store is Redis' own (maxmemory): the suite checks the per-entry cap.
  return createRedisStore(conn, { maxEntryBytes: bounds.maxEntryBytes ?? 1024 * 1024, compressAbove: 512 })
}

type Bounds = { maxBytes?: number; maxEntryBytes?: number }
const stores: [string, (bounds?: Bounds) => GhostStore | Promise<GhostStore>, { bytesBound: boolean }][] = [
  ['memory', (bounds) => createMemoryStore(bounds), { bytesBound: true }],
  ['redis', (bounds) => onRedis({ redis: 'redis://127.0.0.1:6379' }, bounds), { bytesBound: false }],
  [
    'cluster',
    (bounds) => onRedis({ cluster: clusterNodes(), commandTimeout: 1_000 }, bounds),
    { bytesBound: false },
  ],
]

describe.each(stores)('GhostStore contract: %s', (_name, make, { bytesBound }) => {
  const base = baseKey('GET', 'example.com', '/items?a=1')

  it('gives back what it holds, as it was stored', async () => {
    const store = await make()
    expect(await store.set(base, entry())).toBe(true)
    const got = await store.get(base, {})
    expect(got?.status).toBe(200)
    expect(got?.body.toString()).toBe('learned')
    expect(got?.headers).toEqual({ 'content-type': 'text/plain', etag: '"v1"' })
    expect(await store.get(baseKey('GET', 'example.com', '/items?a=2'), {})).toBeUndefined()
    await store.close()
  })

  it('tells variants apart by the fields their Vary names, and replaces a variant in place', async () => {
    const store = await make()
    const vary = ['accept-language']
    await store.set(base, entry({ vary, varyValues: ['fr'], body: Buffer.from('bonjour') }))
    await store.set(base, entry({ vary, varyValues: ['en'], body: Buffer.from('hello') }))
    await store.set(base, entry({ vary, varyValues: ['en'], body: Buffer.from('hello again') }))
    expect((await store.get(base, { 'accept-language': 'fr' }))?.body.toString()).toBe('bonjour')
    expect((await store.get(base, { 'accept-language': ' en ' }))?.body.toString()).toBe('hello again')
    expect(await store.get(base, { 'accept-language': 'de' })).toBeUndefined()
    expect(await store.get(base, {})).toBeUndefined()
    expect((await store.list()).length).toBe(2)
    await store.close()
  })

  it('never gives back an entry past its expiresAt', async () => {
    const store = await make()
    await store.set(base, entry({ expiresAt: Date.now() + 30 }))
    expect(await store.get(base, {})).toBeDefined()
    await sleep(50)
    expect(await store.get(base, {})).toBeUndefined()
    expect(await store.list()).toEqual([])
    await store.close()
  })

  it('refuses an entry above maxEntryBytes, and keeps within maxBytes however much it is given', async () => {
    const store = await make({ maxBytes: 64 * 1024, maxEntryBytes: 16 * 1024 })
    expect(await store.set(base, entry({ body: Buffer.alloc(32 * 1024) }))).toBe(false)
    expect(await store.get(base, {})).toBeUndefined()
    // A large body comes back whole (the Redis store deflates it).
    const big = Buffer.alloc(12 * 1024, 'abc')
    expect(await store.set(base, entry({ body: big }))).toBe(true)
    expect((await store.get(base, {}))?.body.equals(big)).toBe(true)
    if (!bytesBound) return store.close()
    for (let i = 0; i < 200; i++)
      await store.set(baseKey('GET', 'h', `/n/${i}`), entry({ body: Buffer.alloc(10 * 1024, i) }))
    const held = await store.list()
    expect(held.reduce((s, e) => s + e.bytes, 0)).toBeLessThanOrEqual(64 * 1024)
    expect(held.length).toBeGreaterThan(0)
    // The most recent ones are kept.
    expect(await store.get(baseKey('GET', 'h', '/n/199'), {})).toBeDefined()
    expect(await store.get(baseKey('GET', 'h', '/n/0'), {})).toBeUndefined()
    await store.close()
  })

  it('forgets a base, and purges by prefix', async () => {
    const store = await make()
    for (const path of ['/users/1', '/users/2', '/items/1'])
      await store.set(baseKey('GET', 'h', path), entry())
    await store.delete(baseKey('GET', 'h', '/items/1'))
    expect(await store.get(baseKey('GET', 'h', '/items/1'), {})).toBeUndefined()
    expect(await store.purge('GET h/users/')).toBe(2)
    expect(await store.list()).toEqual([])
    await store.close()
  })
})

describe('memory store', () => {
  it('sizes an entry by its body and its fields', () => {
    const bare = entryBytes(entry({ body: Buffer.alloc(1000), headers: {} }))
    expect(bare).toBeGreaterThan(1000)
    expect(entryBytes(entry({ body: Buffer.alloc(1000), headers: { 'x-a': 'b'.repeat(100) } }))).toBe(
      bare + 103,
    )
  })
})

describe('Redis store: an outage', () => {
  it('never fails nor slows a request: nothing to offer within the command timeout, and at once while Redis counts as down', async () => {
    const server = await startRedisServer()
    const conn = connectStore(
      storeSchema.parse({ redis: server.url, prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 200 }),
      silent,
    )
    if (conn === undefined) throw new Error('no Redis configured')
    connections.push(conn)
    await conn.started
    const store = createRedisStore(conn)
    const base = baseKey('GET', 'h', '/x')
    expect(await store.set(base, entry())).toBe(true)
    expect(await store.get(base, {})).toBeDefined()
    server.process.kill('SIGSTOP') // alive but silent: every command waits out its timeout
    try {
      const t0 = performance.now()
      expect(await store.get(base, {})).toBeUndefined()
      expect(performance.now() - t0).toBeLessThan(1_000)
      // Once the connection counts Redis as down, at once.
      const t1 = performance.now()
      expect(await store.get(base, {})).toBeUndefined()
      // Not `false`, which would count the entry as too large: nothing was kept, through no fault of its own.
      await expect(store.set(base, entry())).rejects.toThrow(/Redis is unavailable/)
      expect(performance.now() - t1).toBeLessThan(50)
    } finally {
      server.process.kill('SIGCONT')
      await server.stop()
    }
  })
})

describe('Redis store: a frozen Redis', () => {
  it('answers each lookup within one command timeout of its call, even one queued behind another', async () => {
    const server = await startRedisServer()
    const conn = connectStore(
      storeSchema.parse({ redis: server.url, prefix: `aegis-test:${randomUUID()}:`, commandTimeout: 200 }),
      silent,
    )
    if (conn === undefined) throw new Error('no Redis configured')
    connections.push(conn)
    await conn.started
    const store = createRedisStore(conn)
    const base = baseKey('GET', 'h', '/x')
    expect(await store.set(base, entry())).toBe(true)
    server.process.kill('SIGSTOP')
    await sleep(50)
    try {
      // ioredis sends one automatic pipeline at a time: the second lookup is sent only once
      // the first one's has timed out, and its own timeout starts then.
      const timed = async (): Promise<number> => {
        const t0 = performance.now()
        expect(await store.get(base, {})).toBeUndefined()
        return performance.now() - t0
      }
      const first = timed()
      await sleep(20)
      expect(conn.up).toBe(true)
      const second = await timed()
      expect(await first).toBeLessThan(200 + 50)
      expect(second).toBeLessThan(200 + 50)
    } finally {
      server.process.kill('SIGCONT')
      await server.stop()
    }
  })
})

describe('Redis store: a process that has only begun', () => {
  /** A store on a connection opened just now, not yet ready. */
  const justStarted = (url: string, prefix: string) => {
    const conn = connectStore(storeSchema.parse({ redis: url, prefix, commandTimeout: 200 }), silent)
    if (conn === undefined) throw new Error('no Redis configured')
    connections.push(conn)
    return { conn, store: createRedisStore(conn) }
  }

  it('finds what others learned: its first lookups wait for the connection', async () => {
    const prefix = `aegis-test:${randomUUID()}:`
    const base = baseKey('GET', 'h', '/learned-elsewhere')
    const other = justStarted('redis://127.0.0.1:6379', prefix)
    await other.conn.started
    expect(await other.store.set(base, entry())).toBe(true)
    const { conn, store } = justStarted('redis://127.0.0.1:6379', prefix)
    expect(conn.starting).toBe(true)
    expect((await store.get(base, {}))?.body.toString()).toBe('learned')
  })

  it('waits no longer than one command timeout for a Redis that never answers', async () => {
    const server = await startRedisServer()
    server.process.kill('SIGSTOP') // the port accepts, nothing answers the handshake
    try {
      const { conn, store } = justStarted(server.url, `aegis-test:${randomUUID()}:`)
      const t0 = performance.now()
      expect(await store.get(baseKey('GET', 'h', '/x'), {})).toBeUndefined()
      expect(performance.now() - t0).toBeLessThan(200 + 100)
      expect(conn.starting).toBe(true)
    } finally {
      server.process.kill('SIGCONT')
      await server.stop()
    }
  })
})
