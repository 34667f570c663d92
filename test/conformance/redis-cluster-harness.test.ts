import { Cluster, type Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js'

const TOTAL_SLOTS = 16_384

describe('local Redis Cluster harness', () => {
  let harness: RedisCluster | undefined
  let cluster: Cluster

  beforeAll(async () => {
    harness = await startRedisCluster()
    cluster = new Cluster(harness.nodes, { clusterRetryStrategy: () => null })
    await new Promise<void>((resolve, reject) => {
      cluster.once('ready', resolve)
      cluster.once('error', reject)
    })
  }, 30_000)

  afterAll(async () => {
    await cluster?.quit().catch(() => cluster.disconnect())
    await harness?.stop()
  }, 30_000)

  const nodeKey = (node: Redis): string => `${node.options.host}:${node.options.port}`

  it('runs 3 masters that together own every slot', () => {
    const masters = cluster.nodes('master')
    expect(masters).toHaveLength(3)
    expect(new Set(masters.map(nodeKey))).toEqual(new Set(harness!.nodes.map((n) => `${n.host}:${n.port}`)))
    expect(cluster.slots).toHaveLength(TOTAL_SLOTS)
    expect(cluster.slots.every((owners) => owners.length > 0)).toBe(true)
  })

  it('puts keys with different hash tags on different masters', async () => {
    // Find one hash tag per master, using the server's own CLUSTER KEYSLOT.
    const tagByMaster = new Map<string, string>()
    for (let i = 0; tagByMaster.size < 3 && i < 100; i++) {
      const tag = `tag${i}`
      const slot = await cluster.cluster('KEYSLOT', `{${tag}}:k`)
      expect(slot).toBeGreaterThanOrEqual(0)
      expect(slot).toBeLessThan(TOTAL_SLOTS)
      const master = cluster.slots[slot]?.[0]
      if (master === undefined) throw new Error(`slot ${slot} has no owner`)
      if (!tagByMaster.has(master)) tagByMaster.set(master, tag)
    }
    expect(tagByMaster.size).toBe(3)

    const prefix = `harness:${process.pid}:${Date.now()}`
    for (const [master, tag] of tagByMaster) {
      const key = `{${tag}}:${prefix}`
      await cluster.set(key, master, 'EX', 60)
      // The key really lives on that master, and only there.
      for (const node of cluster.nodes('master')) {
        const stored = await node.exists(key).catch((err: Error) => err.message)
        if (nodeKey(node) === master) expect(stored).toBe(1)
        else expect(String(stored)).toMatch(/^MOVED /)
      }
      expect(await cluster.get(key)).toBe(master)
    }
  })

  it('runs a Lua script over two keys that share the {t} hash tag', async () => {
    const a = `{t}:${process.pid}:a`
    const b = `{t}:${process.pid}:b`
    const result = await cluster.eval(
      "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60); redis.call('SET', KEYS[2], ARGV[2], 'EX', 60); " +
        "return { redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) }",
      2,
      a,
      b,
      'one',
      'two',
    )
    expect(result).toEqual(['one', 'two'])
    expect(await cluster.mget(a, b)).toEqual(['one', 'two'])
  })

  it('rejects keys without a shared hash tag with CROSSSLOT', async () => {
    const a = 'harness:crossslot:a'
    const b = 'harness:crossslot:b'
    const [slotA, slotB] = await Promise.all([cluster.cluster('KEYSLOT', a), cluster.cluster('KEYSLOT', b)])
    expect(slotA).not.toBe(slotB)
    await expect(cluster.eval("return redis.call('GET', KEYS[1])", 2, a, b)).rejects.toThrow(/CROSSSLOT/)
    await expect(cluster.mget(a, b)).rejects.toThrow(/CROSSSLOT/)
  })
})
