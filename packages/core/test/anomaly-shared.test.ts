/**
 * Anomaly verdicts shared through a real Redis (and a real Redis Cluster of three
 * masters): two buses on two connections, as two instances would hold them. A block, an
 * unblock and a campaign reach the other instance and never the sender's own handlers;
 * an instance started later loads what is still live and nothing that has ended; the
 * stored set keeps its bound; hostile messages and stored entries are dropped. Redis
 * killed: publishing returns at once and nothing rejects; once Redis is back, messages
 * flow and what Redis holds is loaded again without being asked.
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { useRedisCluster } from '../../../test/helpers/redis-cluster.js'
import { startRedisServer, waitForSubscribers, type RedisServer } from '../../../test/helpers/redis.js'
import { failOnUncaught } from '../../../test/helpers/uncaught.js'
import { sleep, waitFor } from '../../../test/helpers/wait.js'
import {
  createAnomalyBus,
  type AnomalyBus,
  type SharedBlock,
  type SharedCampaign,
} from '../src/anomaly/shared.js'
import type { Logger } from '../src/kernel/logger.js'
import { connectStore, storeSchema, type RedisConnection } from '../src/store/index.js'

const uncaught = failOnUncaught()

/** What the buses and connections logged as warnings or errors (the outage's own lines aside). */
let logged: string[] = []
const logger: Logger = {
  info() {},
  warn: (_obj, msg) => void logged.push(msg ?? ''),
  error: (_obj, msg) => void logged.push(msg ?? ''),
}

let closers: (() => Promise<void> | void)[] = []
let servers: RedisServer[] = []
let dirs: string[] = []
afterEach(async () => {
  for (const close of closers.reverse()) await close()
  closers = []
  await Promise.all(servers.map((s) => s.stop()))
  servers = []
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  dirs = []
  logged = []
})

type Store = { redis: string } | { cluster: { host: string; port: number }[] }

/** Aegis' connection to `store` under `prefix`, connected. */
async function connection(prefix: string, store: Store, wait = true): Promise<RedisConnection> {
  const conn = connectStore(
    storeSchema.parse({ ...store, prefix, commandTimeout: 200, probeInterval: 100 }),
    logger,
  ) as RedisConnection
  closers.push(() => conn.close())
  if (wait) await waitFor('connected to Redis', () => conn.up, 5_000)
  return conn
}

interface Instance {
  readonly bus: AnomalyBus
  readonly conn: RedisConnection
  readonly blocks: SharedBlock[]
  readonly unblocks: string[]
  readonly campaigns: SharedCampaign[]
}

/** One instance's bus, recording what its handlers were given. */
function instance(conn: RedisConnection, options?: { maxLoaded?: number }): Instance {
  const bus = createAnomalyBus(conn, logger, options)
  closers.push(() => bus.close())
  const seen: Instance = { bus, conn, blocks: [], unblocks: [], campaigns: [] }
  bus.onBlock((b) => void seen.blocks.push(b))
  bus.onUnblock((k) => void seen.unblocks.push(k))
  bus.onCampaign((c) => void seen.campaigns.push(c))
  return seen
}

/** `n` instances listening on the channel, each past the load that follows its subscription. */
async function listening(prefix: string, ...all: Instance[]): Promise<void> {
  const [first] = all
  await waitForSubscribers(first!.conn.client, `${prefix}anomaly`, all.length, 5_000)
  for (const i of all) await i.bus.load()
}

const block = (key: string, ms = 60_000, strikes = 1): SharedBlock => ({
  key,
  until: Date.now() + ms,
  reasons: ['burst', 'scan'],
  strikes,
})

const campaign = (id: string, ms = 60_000): SharedCampaign => ({
  id,
  route: '/api/login',
  kind: 'credential-stuffing',
  until: Date.now() + ms,
  detail: { clients: 412, asn: 64500 },
})

const keysOf = (i: Instance): string[] => i.blocks.map((b) => b.key)
const prefixed = (): string => `aegis-test:${randomUUID()}:`
const single = (): Store => ({ redis: inject('redisUrl') })

describe('anomaly verdicts shared through Redis', () => {
  it('a block, an unblock and a campaign reach the other instance, never the sender', async () => {
    const prefix = prefixed()
    const a = instance(await connection(prefix, single()))
    const b = instance(await connection(prefix, single()))
    await listening(prefix, a, b)

    const sent = block('203.0.113.7', 60_000, 3)
    a.bus.publishBlock(sent)
    await waitFor('B blocks the client', () => b.blocks.length === 1, 2_000)
    expect(b.blocks[0]).toEqual(sent)
    expect(Object.isFrozen(b.blocks[0])).toBe(true)

    a.bus.publishUnblock('203.0.113.7')
    await waitFor('B unblocks it', () => b.unblocks.length === 1, 2_000)
    expect(b.unblocks).toEqual(['203.0.113.7'])

    const found = campaign('c-1')
    a.bus.publishCampaign(found)
    await waitFor('B knows the campaign', () => b.campaigns.length === 1, 2_000)
    expect(b.campaigns[0]).toEqual(found)
    // A network's campaign carries its network.
    const network = { ...campaign('c-net'), route: '*', network: '185.7.7.0/24' }
    a.bus.publishCampaign(network)
    await waitFor('B knows the network campaign', () => b.campaigns.length === 2, 2_000)
    expect(b.campaigns[1]).toEqual(network)

    // B answers; once A hears B, it has heard everything published before it, its own included.
    b.bus.publishBlock(block('198.51.100.9'))
    await waitFor('A hears B', () => a.blocks.length === 1, 2_000)
    expect(keysOf(a)).toEqual(['198.51.100.9'])
    expect([a.unblocks, a.campaigns]).toEqual([[], []])
    expect(keysOf(b)).toEqual(['203.0.113.7'])
  })

  it('an instance started later loads the live blocks and campaigns, not the ended nor the unblocked', async () => {
    const prefix = prefixed()
    const a = instance(await connection(prefix, single()))
    const b = instance(await connection(prefix, single()))
    await listening(prefix, a, b)

    a.bus.publishBlock(block('203.0.113.1', 60_000, 2))
    a.bus.publishBlock(block('203.0.113.2', 150)) // ends before the late instance starts
    a.bus.publishBlock(block('203.0.113.3'))
    a.bus.publishUnblock('203.0.113.3')
    a.bus.publishCampaign(campaign('c-live'))
    a.bus.publishCampaign(campaign('c-ended', 150))
    // Stored before published, in one script: B has heard them all once it has the last.
    await waitFor('B heard every verdict', () => b.unblocks.length === 1 && b.campaigns.length === 2, 2_000)
    await sleep(200)

    const late = instance(await connection(prefix, single()))
    await late.bus.load()
    // Its subscription may bring a second load (handlers take a verdict twice calmly): the same ones.
    expect(new Set(keysOf(late))).toEqual(new Set(['203.0.113.1']))
    expect(late.blocks[0]?.strikes).toBe(2)
    expect(new Set(late.campaigns.map((c) => c.id))).toEqual(new Set(['c-live']))
    expect(late.campaigns[0]?.detail).toEqual({ clients: 412, asn: 64500 })
    await waitForSubscribers(a.conn.client, `${prefix}anomaly`, 3)
    await late.bus.load()
    expect(new Set(keysOf(late))).toEqual(new Set(['203.0.113.1']))
    expect(new Set(late.campaigns.map((c) => c.id))).toEqual(new Set(['c-live']))
  })

  it('a load does not undo a change this instance makes while it runs', async () => {
    const prefix = prefixed()
    const a = instance(await connection(prefix, single()))
    const b = instance(await connection(prefix, single()))
    await listening(prefix, a, b)
    a.bus.publishBlock(block('203.0.113.4'))
    a.bus.publishCampaign(campaign('c-4'))
    await waitFor('B heard them', () => b.blocks.length === 1 && b.campaigns.length === 1, 2_000)

    b.blocks.length = b.campaigns.length = 0
    // The load reads Redis before the unblock reaches it, and answers after.
    const loading = b.bus.load()
    b.bus.publishUnblock('203.0.113.4')
    await loading
    expect(b.blocks).toEqual([])
    expect(b.campaigns.map((c) => c.id)).toEqual(['c-4'])
    await waitFor('A heard the unblock', () => a.unblocks.length === 1, 2_000)
  })

  it('keeps at most maxLoaded in Redis (those ending last) and loads at most maxLoaded', async () => {
    const prefix = prefixed()
    const a = instance(await connection(prefix, single()), { maxLoaded: 5 })
    const b = instance(await connection(prefix, single()))
    await listening(prefix, a, b)
    for (let i = 0; i < 8; i++) a.bus.publishBlock(block(`10.0.0.${i}`, 60_000 + i * 1_000))
    await waitFor('B heard the 8 blocks', () => b.blocks.length === 8, 2_000)

    const raw = new Redis(inject('redisUrl'))
    closers.push(() => void raw.disconnect())
    expect(await raw.hlen(`${prefix}{anomaly}:blocks`)).toBe(5)
    expect(await raw.zrange(`${prefix}{anomaly}:blocks:ends`, '0', '-1')).toEqual([
      '10.0.0.3',
      '10.0.0.4',
      '10.0.0.5',
      '10.0.0.6',
      '10.0.0.7',
    ])
    // Both keys expire with the last entry.
    const ttl = await raw.pttl(`${prefix}{anomaly}:blocks`)
    expect(ttl).toBeGreaterThan(60_000)
    expect(ttl).toBeLessThanOrEqual(67_000)

    const late = instance(await connection(prefix, single()), { maxLoaded: 3 })
    await late.bus.load()
    // Three of the five (a second load, after its subscription, reads the same three).
    expect(new Set(keysOf(late)).size).toBe(3)
  })

  it('drops hostile messages and stored entries, never throws, and keeps working', async () => {
    const prefix = prefixed()
    const channel = `${prefix}anomaly`
    const a = instance(await connection(prefix, single()))
    // A handler that throws is logged; the next one still gets the verdict.
    a.bus.onBlock(() => {
      throw new Error('the engine failed')
    })
    const after: string[] = []
    a.bus.onBlock((b) => void after.push(b.key))
    const raw = new Redis(inject('redisUrl'))
    closers.push(() => void raw.disconnect())
    await listening(prefix, a)

    const now = Date.now()
    const good = { key: '192.0.2.1', until: now + 60_000, reasons: ['x'], strikes: 1 }
    const msg = (type: unknown, data: unknown, from: unknown = 'other'): string =>
      JSON.stringify({ from, type, data })
    const hostile = [
      'not json',
      '',
      'null',
      '[]',
      '"block"',
      '{"from":"other","type":"block"',
      'x'.repeat(1024 * 1024),
      msg('block', { ...good, key: 7 }),
      msg('block', { ...good, key: '' }),
      msg('block', { ...good, key: 'k'.repeat(257) }),
      msg('block', { ...good, until: now - 1 }),
      msg('block', { ...good, until: '9999999999999' }),
      msg('block', { ...good, until: null }), // NaN and Infinity travel as null
      msg('block', { ...good, until: 1e300 }),
      msg('block', { ...good, reasons: 'x' }),
      msg('block', { ...good, reasons: Array.from({ length: 17 }, () => 'x') }),
      msg('block', { ...good, reasons: Array.from({ length: 100_000 }, () => 'x') }),
      msg('block', { ...good, reasons: ['r'.repeat(65)] }),
      msg('block', { ...good, reasons: [{}] }),
      msg('block', { ...good, strikes: -1 }),
      msg('block', { ...good, strikes: 1.5 }),
      msg('block', { ...good, strikes: '1' }),
      msg('block', null),
      msg('block', [good]),
      msg('block', good, 7),
      msg('block', good, ''),
      JSON.stringify({ type: 'block', data: good }),
      msg('ban', good),
      msg('unblock', 42),
      msg('unblock', { key: '192.0.2.1' }),
      msg('campaign', { id: 'c', route: '/', kind: 'k', until: now + 60_000, detail: [] }),
      msg('campaign', { id: 'c', route: '/', kind: 'k', until: now + 60_000, detail: null }),
      msg('campaign', { id: 'c', route: '/', kind: '', until: now + 60_000, detail: {} }),
      msg('campaign', { id: 'c', route: 5, kind: 'k', until: now + 60_000, detail: {} }),
      msg('campaign', { id: 'c', route: '/', kind: 'k', until: now - 5, detail: {} }),
      '{"from":"other","type":"block","data":{"__proto__":{"key":"192.0.2.66"},"until":1}}',
    ]
    for (const text of hostile) await raw.publish(channel, text)
    // And in storage, beside one sound entry: the load drops the rest.
    const stored = `${prefix}{anomaly}:blocks`
    await raw.hset(stored, 'bad-json', '{', 'bad-type', '[1]', 'ended', JSON.stringify({ ...good, until: 1 }))
    await raw.hset(stored, 'sound', JSON.stringify({ ...good, key: '192.0.2.2' }))
    await raw.pexpire(stored, 60_000)
    // The last message is sound: by the time it arrives, every hostile one was read.
    await raw.publish(channel, msg('block', good))
    await waitFor('the sound message', () => a.blocks.length === 1, 2_000)
    expect(a.blocks).toEqual([good])
    expect([a.unblocks, a.campaigns]).toEqual([[], []])
    expect(after).toEqual(['192.0.2.1'])
    expect(logged).toEqual(['anomaly: a handler of a shared verdict threw'])

    a.blocks.length = 0
    await a.bus.load()
    expect(keysOf(a)).toEqual(['192.0.2.2'])

    // Publishing what cannot be shared is dropped too, without a throw.
    const getter = Object.defineProperty({}, 'key', {
      get() {
        throw new Error('hostile getter')
      },
    })
    expect(() => {
      a.bus.publishBlock(getter as SharedBlock)
      a.bus.publishBlock(null as unknown as SharedBlock)
      a.bus.publishBlock({ ...good, until: Number.NaN })
      a.bus.publishUnblock(undefined as unknown as string)
      a.bus.publishCampaign({ ...campaign('c'), detail: { n: 1n } })
      a.bus.publishCampaign({ ...campaign('c'), detail: { big: 'x'.repeat(20_000) } })
    }).not.toThrow()
    expect(uncaught).toEqual([])
  })

  it('close() leaves no handle behind', async () => {
    const handles = (): string[] =>
      process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'FSReqCallback')
    /** The handles open now that were not in `before` (a multiset difference). */
    const beyond = (before: readonly string[]): string[] => {
      const left = [...before]
      return handles().filter((r) => {
        const at = left.indexOf(r)
        if (at >= 0) left.splice(at, 1)
        return at < 0
      })
    }
    const tcp = (): number => handles().filter((r) => r === 'TCPSocketWrap').length
    // The sockets of the tests before close a moment after their QUIT is answered.
    await waitFor('earlier sockets closed', () => tcp() === 0, 2_000)
    const before = handles()
    const prefix = prefixed()
    const conn = connectStore(
      storeSchema.parse({ redis: inject('redisUrl'), prefix }),
      logger,
    ) as RedisConnection
    await waitFor('connected', () => conn.up, 2_000)
    const bus = createAnomalyBus(conn, logger)
    bus.onBlock(() => undefined)
    await waitForSubscribers(conn.client, `${prefix}anomaly`, 1)
    await bus.load()
    bus.publishBlock(block('203.0.113.5'))
    expect(tcp()).toBe(2)

    await bus.close()
    await bus.close() // idempotent
    await waitFor('the subscriber gone', () => tcp() === 1, 2_000)
    bus.publishBlock(block('203.0.113.6')) // after close: nothing, no throw
    await conn.close()
    await waitFor('every handle gone', () => beyond(before).length === 0, 2_000).catch((err: unknown) => {
      throw new Error(`left behind: ${beyond(before).join(', ')}`, { cause: err })
    })
  })
})

describe('anomaly verdicts across a Redis outage', () => {
  it('publishing returns at once while Redis is down; once it is back, messages flow and what it holds is loaded', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-anomaly-'))
    dirs.push(dir)
    const persisted = ['--dir', dir, '--dbfilename', 'anomaly.rdb']
    const server = await startRedisServer(persisted)
    servers.push(server)
    const prefix = prefixed()
    const a = instance(await connection(prefix, { redis: server.url }))
    const b = instance(await connection(prefix, { redis: server.url }))
    await listening(prefix, a, b)
    a.bus.publishBlock(block('203.0.113.1'))
    await waitFor('B blocks it', () => b.blocks.length === 1, 2_000)

    server.process.kill('SIGKILL')
    await server.stop()
    // At once, before the connections noticed, and again once they have.
    const publishAll = (): number => {
      const started = performance.now()
      for (let i = 0; i < 100; i++) {
        a.bus.publishBlock(block(`10.1.0.${i}`))
        a.bus.publishUnblock(`10.1.0.${i}`)
        a.bus.publishCampaign(campaign(`c-${i}`))
      }
      return performance.now() - started
    }
    expect(publishAll()).toBeLessThan(50)
    await waitFor('both see Redis down', () => !a.conn.up && !b.conn.up, 3_000)
    expect(publishAll()).toBeLessThan(50)
    const loading = performance.now()
    await b.bus.load()
    expect(performance.now() - loading).toBeLessThan(50)
    expect(keysOf(b)).toEqual(['203.0.113.1'])

    // Meanwhile another instance, on another Redis, blocked a client; that Redis' data
    // is what comes back on the old port. No message about it ever reaches A or B.
    const other = await startRedisServer(persisted)
    servers.push(other)
    const c = instance(await connection(prefix, { redis: other.url }))
    await listening(prefix, c)
    c.bus.publishBlock(block('198.51.100.77', 60_000, 4))
    c.bus.publishCampaign(campaign('c-while-down'))
    const raw = new Redis(other.url)
    await waitFor('stored', async () => (await raw.hlen(`${prefix}{anomaly}:campaigns`)) === 1, 2_000)
    await raw.save()
    raw.disconnect()
    await other.stop()

    servers.push(await startRedisServer(persisted, server.port))
    await waitFor(
      'B loaded what Redis holds, unasked',
      () => keysOf(b).includes('198.51.100.77') && b.campaigns.some((x) => x.id === 'c-while-down'),
      10_000,
    )
    expect(b.blocks.find((x) => x.key === '198.51.100.77')?.strikes).toBe(4)
    await waitFor('A too', () => keysOf(a).includes('198.51.100.77'), 10_000)
    // Nothing A published during the outage is there.
    expect(keysOf(b).some((k) => k.startsWith('10.1.'))).toBe(false)

    await waitFor('both connections up', () => a.conn.up && b.conn.up, 5_000)
    await waitForSubscribers(a.conn.client, `${prefix}anomaly`, 2, 5_000)
    a.bus.publishBlock(block('203.0.113.99'))
    await waitFor('messages flow again', () => keysOf(b).includes('203.0.113.99'), 2_000)
    b.blocks.length = 0
    await b.bus.load()
    expect(new Set(keysOf(b))).toEqual(new Set(['198.51.100.77', '203.0.113.99']))
    expect(uncaught).toEqual([])
    // The outage was logged by the connections; the bus added nothing.
    expect(logged.filter((l) => l.startsWith('anomaly'))).toEqual([])
  }, 30_000)

  it('a verdict made before the first connection is shared once it is made', async () => {
    const server = await startRedisServer()
    servers.push(server)
    const prefix = prefixed()
    const b = instance(await connection(prefix, { redis: server.url }))
    await listening(prefix, b)
    const conn = await connection(prefix, { redis: server.url }, false)
    const a = createAnomalyBus(conn, logger)
    closers.push(() => a.close())
    expect(conn.starting).toBe(true)
    a.publishBlock(block('203.0.113.8'))
    a.publishBlock(block('203.0.113.9'))
    a.publishUnblock('203.0.113.9')
    await waitFor('B hears them', () => b.unblocks.length === 1, 3_000)
    expect(keysOf(b)).toEqual(['203.0.113.8'])
    expect(b.unblocks).toEqual(['203.0.113.9'])
  })
})

describe('anomaly verdicts shared through a Redis Cluster (3 masters)', () => {
  const nodes = useRedisCluster()

  it('a block and a campaign reach the other instance; one started later loads them', async () => {
    const prefix = prefixed()
    const a = instance(await connection(prefix, { cluster: nodes() }))
    const b = instance(await connection(prefix, { cluster: nodes() }))
    await listening(prefix, a, b)

    a.bus.publishBlock(block('203.0.113.7', 60_000, 2))
    a.bus.publishBlock(block('203.0.113.8'))
    a.bus.publishUnblock('203.0.113.8')
    a.bus.publishCampaign(campaign('c-1'))
    await waitFor('B heard them', () => b.unblocks.length === 1 && b.campaigns.length === 1, 3_000)
    expect(keysOf(b)).toEqual(['203.0.113.7', '203.0.113.8'])
    b.bus.publishBlock(block('198.51.100.1'))
    await waitFor('A hears B', () => a.blocks.length === 1, 3_000)
    expect(keysOf(a)).toEqual(['198.51.100.1'])

    const late = instance(await connection(prefix, { cluster: nodes() }))
    await late.bus.load()
    expect(new Set(keysOf(late))).toEqual(new Set(['203.0.113.7', '198.51.100.1']))
    expect(new Set(late.campaigns.map((c) => c.id))).toEqual(new Set(['c-1']))
  }, 30_000)
})
