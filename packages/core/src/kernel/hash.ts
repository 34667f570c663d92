/**
 * A fast non-cryptographic string hash for the engines' sketches and rings: FNV-1a over
 * the UTF-16 units, finished with MurmurHash3's fmix32 so that every bit mixes (bitmaps
 * and HyperLogLog registers read bits from both ends). Not for secrets.
 *
 * @example
 * hash32('/users/42') // a 32-bit unsigned integer, the same every run
 */
export function hash32(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}
