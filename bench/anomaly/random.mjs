/**
 * A seeded source of randomness for the traffic generator: mulberry32 (a 32-bit
 * state, one multiply-xorshift round per draw) and the few distributions the
 * profiles need. Never `Math.random`: a run is reproducible from its seed alone.
 */

/**
 * mulberry32: a generator of uniform floats in [0, 1) from a 32-bit seed. Small
 * and fast; its period (2³²) is far beyond the few million draws of a run.
 *
 * @example
 * const next = mulberry32(42)
 * next() // 0.6011037519201636, on every machine
 */
export function mulberry32(seed) {
  let a = seed >>> 0
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A seeded random source with the distributions the profiles draw from.
 *
 * @example
 * const r = createRandom(7)
 * r.int(1, 6) // a die
 * r.logNormal(15_000, 0.7) // a think time around 15 s
 * const child = r.fork() // an independent stream for one client
 */
export function createRandom(seed) {
  const next = mulberry32(seed)
  const r = {
    next,
    /** A float in [lo, hi). */
    float: (lo, hi) => lo + (hi - lo) * next(),
    /** An integer in [lo, hi], both ends included. */
    int: (lo, hi) => lo + Math.floor((hi - lo + 1) * next()),
    chance: (p) => next() < p,
    pick: (list) => list[Math.floor(next() * list.length)],
    /** One of `[value, weight]` pairs, in proportion to the weights. */
    weighted(pairs) {
      let total = 0
      for (const [, w] of pairs) total += w
      let x = next() * total
      for (const [value, w] of pairs) if ((x -= w) < 0) return value
      return pairs[pairs.length - 1][0]
    },
    /** A standard normal draw (Box–Muller; `1 - next()` keeps the logarithm finite). */
    normal: () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next()),
    /** Log-normal with the given median and σ of the logarithm: human think times. */
    logNormal: (median, sigma) => median * Math.exp(sigma * r.normal()),
    /** Exponential with the given mean: the gaps of a Poisson process. */
    exponential: (mean) => -mean * Math.log(1 - next()),
    /** A shuffled copy (Fisher–Yates). */
    shuffle(list) {
      const out = [...list]
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1))
        ;[out[i], out[j]] = [out[j], out[i]]
      }
      return out
    },
    /** `n` lowercase hex digits. */
    hex(n) {
      let s = ''
      for (let i = 0; i < n; i++) s += Math.floor(next() * 16).toString(16)
      return s
    },
    /**
     * An independent stream seeded from this one. Each client draws from its own,
     * so a change inside one profile leaves every other client's traffic as it was.
     */
    fork: () => createRandom(Math.floor(next() * 4294967296)),
  }
  return r
}

/** `x` held within [lo, hi]. */
export const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x))
