/**
 * One contract for every `GhostStore`, run over each implementation (the memory store
 * today; Redis and Redis Cluster join the table with their store).
 */
import { describe, expect, it } from 'vitest'
import { baseKey } from '../src/ghost/key.js'
import type { GhostEntry, GhostStore } from '../src/ghost/store.js'
import { createMemoryStore, entryBytes } from '../src/ghost/stores/memory.js'
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

const stores: [string, (bounds?: { maxBytes?: number; maxEntryBytes?: number }) => GhostStore][] = [
  ['memory', (bounds) => createMemoryStore(bounds)],
]

describe.each(stores)('GhostStore contract: %s', (_name, make) => {
  const base = baseKey('GET', 'example.com', '/items?a=1')

  it('gives back what it holds, as it was stored', async () => {
    const store = make()
    expect(await store.set(base, entry())).toBe(true)
    const got = await store.get(base, {})
    expect(got?.status).toBe(200)
    expect(got?.body.toString()).toBe('learned')
    expect(got?.headers).toEqual({ 'content-type': 'text/plain', etag: '"v1"' })
    expect(await store.get(baseKey('GET', 'example.com', '/items?a=2'), {})).toBeUndefined()
    await store.close()
  })

  it('tells variants apart by the fields their Vary names, and replaces a variant in place', async () => {
    const store = make()
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
    const store = make()
    await store.set(base, entry({ expiresAt: Date.now() + 30 }))
    expect(await store.get(base, {})).toBeDefined()
    await sleep(50)
    expect(await store.get(base, {})).toBeUndefined()
    expect(await store.list()).toEqual([])
    await store.close()
  })

  it('refuses an entry above maxEntryBytes, and keeps within maxBytes however much it is given', async () => {
    const store = make({ maxBytes: 64 * 1024, maxEntryBytes: 16 * 1024 })
    expect(await store.set(base, entry({ body: Buffer.alloc(32 * 1024) }))).toBe(false)
    expect(await store.get(base, {})).toBeUndefined()
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
    const store = make()
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
