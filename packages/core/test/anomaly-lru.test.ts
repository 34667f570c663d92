import { describe, expect, it } from 'vitest'
import { GrowingLru } from '../src/anomaly/lru.js'

describe('GrowingLru', () => {
  it('keeps the order across growth and evicts only at max, least recent first', () => {
    const evicted: string[] = []
    const lru = new GrowingLru<string, number>(3000, (_value, key) => evicted.push(key))
    for (let i = 0; i < 3000; i++) lru.set(`k${i}`, i) // grows 1024 → 2048 → 3000
    expect(evicted).toEqual([])
    expect(lru.size).toBe(3000)
    expect(lru.get('k0')).toBe(0) // now the most recent
    lru.set('k1', 1) // an update: no growth, no eviction
    lru.set('new', -1)
    expect(evicted).toEqual(['k2']) // k0 and k1 were used since
    expect(lru.peek('k2')).toBeUndefined()
    expect([...lru.entries()].slice(0, 3)).toEqual([
      ['new', -1],
      ['k1', 1],
      ['k0', 0],
    ])
    expect(lru.delete('k0')).toBe(true)
    expect(lru.size).toBe(3000 - 1)
  })

  it('peeks without touching the order', () => {
    const evicted: string[] = []
    const lru = new GrowingLru<string, number>(2, (_value, key) => evicted.push(key))
    lru.set('a', 1)
    lru.set('b', 2)
    expect(lru.peek('a')).toBe(1)
    lru.set('c', 3)
    expect(evicted).toEqual(['a'])
    expect([...lru.values()]).toEqual([3, 2])
  })
})
