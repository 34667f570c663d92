/**
 * A fast non-cryptographic string hash for the engines' sketches and rings: FNV-1a over
 * the UTF-16 units (from `from` on), finished with MurmurHash3's fmix32 so that every bit
 * mixes (bitmaps and HyperLogLog registers read bits from both ends). Not for secrets.
 *
 * @example
 * hash32('/users/42') // a 32-bit unsigned integer, the same every run
 */
export function hash32(s: string, from = 0): number {
  let h = 0x811c9dc5
  for (let i = from; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** The bits set in a 32-bit word. */
export function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333)
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24
}

/**
 * Linear counting (Whang et al., 1990): n ≈ −m·ln(V), V the share of a bitmap's m bits
 * still zero. A full bitmap says "at least m·ln(2m)", the estimate with half a bit left.
 *
 * @example
 * linearCount(popcount32(bits), 32) // distinct values hashed into a 32-bit word
 */
export function linearCount(setBits: number, m: number): number {
  const zeros = m - setBits
  return zeros <= 0 ? m * Math.log(2 * m) : m * Math.log(m / zeros)
}
