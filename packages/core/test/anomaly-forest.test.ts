/**
 * The Isolation Forest against the paper (Liu, Ting & Zhou): c(n), the height limit and
 * subsampling, scores that isolate what stands out, and repeatable trees from a seed.
 */
import { describe, expect, it } from 'vitest'
import { averagePathLength, growForest, seeded } from '../src/anomaly/forest.js'

/** `n` points from a 2-D standard normal (Box–Muller on the seeded generator). */
function normalCloud(n: number, seed: number): Float64Array {
  const random = seeded(seed)
  const out = new Float64Array(n * 2)
  for (let i = 0; i < n; i++) {
    const r = Math.sqrt(-2 * Math.log(1 - random()))
    const a = 2 * Math.PI * random()
    out[2 * i] = r * Math.cos(a)
    out[2 * i + 1] = r * Math.sin(a)
  }
  return out
}

describe('isolation forest', () => {
  it('normalises by c(n) = 2H(n−1) − 2(n−1)/n', () => {
    expect(averagePathLength(256)).toBeCloseTo(10.2448, 3)
    expect(averagePathLength(2)).toBe(1)
    expect(averagePathLength(1)).toBe(0)
    expect(averagePathLength(0)).toBe(0)
    // H(i) ≈ ln(i) + γ: for n = 3, 2(ln 2 + γ) − 4/3.
    expect(averagePathLength(3)).toBeCloseTo(2 * (Math.log(2) + 0.5772156649) - 4 / 3, 10)
  })

  it('isolates a point far from a normal cloud, and scores the cloud as normal', () => {
    const cloud = normalCloud(2000, 7)
    const forest = growForest(cloud, 2, { seed: 3 })
    expect(forest.subsample).toBe(256)
    const far = forest.score([8, 8])
    let sum = 0
    for (let i = 0; i < 2000; i++) sum += forest.score([cloud[2 * i] as number, cloud[2 * i + 1] as number])
    expect(far).toBeGreaterThan(0.7)
    expect(sum / 2000).toBeLessThan(0.5)
    expect(forest.score([0, 0])).toBeLessThan(0.45)
    // A path never beyond the height limit, plus c(size) at its leaf.
    expect(forest.pathLength([8, 8])).toBeLessThanOrEqual(Math.ceil(Math.log2(256)) + averagePathLength(256))
  })

  it('grows the same forest from the same seed, another from another', () => {
    const cloud = normalCloud(500, 11)
    const a = growForest(cloud, 2, { seed: 5 })
    const b = growForest(cloud, 2, { seed: 5 })
    const c = growForest(cloud, 2, { seed: 6 })
    for (const p of [
      [0, 0],
      [3, -1],
      [10, 0],
    ])
      expect(a.score(p)).toBe(b.score(p))
    expect(
      [
        [0, 0],
        [3, -1],
      ].some((p) => a.score(p) !== c.score(p)),
    ).toBe(true)
  })

  it('takes every point when there are fewer than ψ, and 0.5 for a single one', () => {
    const small = growForest(new Float64Array([0, 0, 1, 1, 2, 2]), 2)
    expect(small.subsample).toBe(3)
    expect(growForest(new Float64Array([4, 4]), 2).score([4, 4])).toBe(0.5)
    // Points that never vary leave every tree a single leaf: nothing stands out.
    const same = growForest(new Float64Array(20).fill(1), 2)
    expect(same.score([1, 1])).toBeCloseTo(same.score([5, 5]), 10)
  })

  it('refuses what it cannot grow on', () => {
    expect(() => growForest(new Float64Array(0), 2)).toThrow(RangeError)
    expect(() => growForest(new Float64Array(4), 0)).toThrow(RangeError)
  })
})
