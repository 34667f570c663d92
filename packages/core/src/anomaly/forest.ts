/**
 * An Isolation Forest (Liu, Ting & Zhou, ICDM 2008; TKDD 2012), written here: the npm
 * packages build every tree on the whole set (no subsampling) and one miscomputes c(n).
 * Faithful to the paper: `trees` trees (100), each on a subsample of `ψ` points drawn
 * without replacement (256), grown to the height limit ⌈log₂ ψ⌉ by a random attribute
 * and a split drawn uniformly between its minimum and maximum; a point's anomaly score
 * is 2^(−E[h(x)] / c(ψ)), where h(x) is its path length plus c(size) at the external node
 * it ends in. Trees live in typed arrays; scoring allocates nothing. A seeded generator
 * makes a forest, and so every test, repeatable.
 */

/** Euler–Mascheroni constant, for the harmonic number H(i) ≈ ln(i) + γ. */
const EULER = 0.5772156649015329

/**
 * c(n): the average path length of an unsuccessful search in a binary search tree of n
 * points — 2H(n−1) − 2(n−1)/n for n > 2, 1 for n = 2, 0 below (the paper's normaliser).
 *
 * @example
 * averagePathLength(256) // ≈ 10.2448
 */
export function averagePathLength(n: number): number {
  if (n > 2) return 2 * (Math.log(n - 1) + EULER) - (2 * (n - 1)) / n
  return n === 2 ? 1 : 0
}

/**
 * A small seeded generator (mulberry32): uniform in [0, 1). Not for secrets; for trees a
 * test can grow twice the same.
 *
 * @example
 * const random = seeded(42)
 * random() // 0.6011037519201636, every time
 */
export function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** How a forest is grown. */
export interface ForestOptions {
  /** Trees (default 100, the paper's). */
  readonly trees?: number
  /** Points per tree, drawn without replacement (default 256, the paper's ψ). */
  readonly subsample?: number
  /** Seed of the generator (default 1). */
  readonly seed?: number
}

/** A grown forest: `score` a point (its features, `dimensions` long) in [0, 1]. */
export interface Forest {
  readonly dimensions: number
  /** The ψ the trees were grown on (smaller than asked when the sample was smaller). */
  readonly subsample: number
  /** 2^(−E[h(x)]/c(ψ)): near 1 anomalous, well under 0.5 normal, all near 0.5 when nothing stands out. */
  score(point: ArrayLike<number>): number
  /** E[h(x)], the mean path length over the trees. */
  pathLength(point: ArrayLike<number>): number
  /**
   * Which features isolated `point`: `out[f]` gets feature f's share of the splits on the
   * point's paths, each split weighted by 1 / its depth + 1 (a split near the root cuts the
   * point off from most of the sample; one deep down from a few). The shares sum to 1 (0
   * when no tree split). Returns the point's score. Allocates nothing.
   */
  explain(point: ArrayLike<number>, out: Float64Array): number
}

/*
 * Every tree in two flat typed arrays, each tree a complete binary tree of `nodesPerTree`
 * slots (node i's children at 2i + 1 and 2i + 2): no child links to load, one array
 * lookup per level. A slot whose `feature` is −1 is an external node and holds, in
 * `threshold`, c(size): the path length the paper adds for the points it holds.
 */
/** A forest grown a few trees at a time, so that growing never holds the event loop long. */
export interface ForestGrower {
  /** Trees grown so far. */
  readonly grown: number
  /** Grow up to `trees` more; `true` once every tree is grown. */
  step(trees: number): boolean
  /** The forest of the trees grown so far (all of them once `step` said `true`). */
  forest(): Forest
}

/**
 * Start growing a forest on `rows` points of `dimensions` features each, row-major in
 * `data` (which must not change until the last step).
 *
 * @example
 * const grower = forestGrower(snapshots, 15, { seed: 7 })
 * while (!grower.step(10)) await new Promise(setImmediate)
 * const forest = grower.forest()
 */
export function forestGrower(
  data: Float64Array,
  dimensions: number,
  options: ForestOptions = {},
): ForestGrower {
  if (!Number.isInteger(dimensions) || dimensions < 1)
    throw new RangeError('dimensions must be a positive integer')
  const rows = Math.floor(data.length / dimensions)
  if (rows < 1) throw new RangeError('grow a forest on one point at least')
  const treeCount = options.trees ?? 100
  if (!Number.isInteger(treeCount) || treeCount < 1) throw new RangeError('trees must be a positive integer')
  const psi = Math.min(options.subsample ?? 256, rows)
  const random = seeded(options.seed ?? 1)
  const heightLimit = Math.ceil(Math.log2(Math.max(psi, 2)))
  // A tree of height ⌈log₂ ψ⌉ fits a complete binary tree of this many slots.
  const nodesPerTree = 2 ** (heightLimit + 1) - 1
  const feature = new Int32Array(treeCount * nodesPerTree).fill(-1)
  const threshold = new Float64Array(treeCount * nodesPerTree)
  // Scratch shared by every tree: the sample's row indices, partitioned in place.
  const order = new Int32Array(rows)
  const sample = new Int32Array(psi)
  const stack: number[] = []
  let grown = 0

  function growTree(base: number): void {
    // ψ rows without replacement: a partial Fisher–Yates shuffle.
    for (let i = 0; i < rows; i++) order[i] = i
    for (let i = 0; i < psi; i++) {
      const j = i + Math.floor(random() * (rows - i))
      const swap = order[i] as number
      order[i] = order[j] as number
      order[j] = swap
      sample[i] = order[i] as number
    }
    // Grow iteratively: [node, from, to, height] on a stack, the sample partitioned in place.
    stack.push(0, 0, psi, 0)
    while (stack.length > 0) {
      const height = stack.pop() as number
      const to = stack.pop() as number
      const from = stack.pop() as number
      const node = stack.pop() as number
      const n = to - from
      threshold[base + node] = averagePathLength(n)
      if (height >= heightLimit || n <= 1) continue
      // A random attribute among those that still vary here; none: an external node.
      let q = -1
      let lo = 0
      let hi = 0
      const first = Math.floor(random() * dimensions)
      for (let k = 0; k < dimensions && q < 0; k++) {
        const f = (first + k) % dimensions
        lo = Infinity
        hi = -Infinity
        for (let i = from; i < to; i++) {
          const v = data[(sample[i] as number) * dimensions + f] as number
          if (v < lo) lo = v
          if (v > hi) hi = v
        }
        if (hi > lo) q = f
      }
      if (q < 0) continue
      const p = lo + random() * (hi - lo)
      // Partition: values < p to the left.
      let mid = from
      for (let i = from; i < to; i++) {
        const row = sample[i] as number
        if ((data[row * dimensions + q] as number) < p) {
          sample[i] = sample[mid] as number
          sample[mid++] = row
        }
      }
      feature[base + node] = q
      threshold[base + node] = p
      stack.push(2 * node + 1, from, mid, height + 1, 2 * node + 2, mid, to, height + 1)
    }
  }

  const normaliser = averagePathLength(psi)
  const pathLength = (point: ArrayLike<number>): number => {
    let total = 0
    for (let base = 0, end = grown * nodesPerTree; base < end; base += nodesPerTree) {
      let node = 0
      let depth = 0
      let f = feature[base] as number
      while (f >= 0) {
        node = (point[f] as number) < (threshold[base + node] as number) ? 2 * node + 1 : 2 * node + 2
        depth++
        f = feature[base + node] as number
      }
      total += depth + (threshold[base + node] as number)
    }
    return total / grown
  }
  const scoreOf = (meanPath: number): number => (normaliser === 0 ? 0.5 : 2 ** (-meanPath / normaliser))
  const forest: Forest = {
    dimensions,
    subsample: psi,
    pathLength,
    score: (point) => scoreOf(pathLength(point)),
    explain(point, out) {
      out.fill(0)
      let total = 0
      let weights = 0
      for (let base = 0, end = grown * nodesPerTree; base < end; base += nodesPerTree) {
        let node = 0
        let depth = 0
        let f = feature[base] as number
        while (f >= 0) {
          const w = 1 / (depth + 1)
          out[f] = (out[f] as number) + w
          weights += w
          node = (point[f] as number) < (threshold[base + node] as number) ? 2 * node + 1 : 2 * node + 2
          depth++
          f = feature[base + node] as number
        }
        total += depth + (threshold[base + node] as number)
      }
      if (weights > 0) for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) / weights
      return scoreOf(total / grown)
    },
  }
  return {
    get grown() {
      return grown
    },
    step(more) {
      for (let i = 0; i < more && grown < treeCount; i++) growTree(grown++ * nodesPerTree)
      return grown >= treeCount
    },
    forest: () => forest,
  }
}

/**
 * Grow a forest on `rows` points of `dimensions` features each, row-major in `data`, all at once.
 *
 * @example
 * const forest = growForest(new Float64Array([0, 0, 0.1, 0.2, 9, 9]), 2, { trees: 50 })
 * forest.score([9, 9]) > forest.score([0, 0]) // true
 */
export function growForest(data: Float64Array, dimensions: number, options: ForestOptions = {}): Forest {
  const grower = forestGrower(data, dimensions, options)
  grower.step(options.trees ?? 100)
  return grower.forest()
}
