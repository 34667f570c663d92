/**
 * The traversal oracle of the FuzzDB replays, independent of Aegis' own decoder:
 * every reading of a path a careless server might make (percent-decoding to a
 * fixed point, `%uXXXX`, overlong UTF-8 read three ways, NFKC folding, `\\` as
 * `/`, `;parameters` dropped), and which of them hold a `..` segment.
 */
const hex = (s: string): boolean => /^[0-9a-fA-F]+$/.test(s)

/**
 * How a decoder treats a C0/C1 lead (which only ever starts an overlong form)
 * before a byte that is not a continuation: `strict` keeps both bytes as they are,
 * `mask` combines the bits anyway (`%c0%2e` is "."; IIS read `%c1%1c` as "\"),
 * `drop` discards the impossible lead (`%c0%5c` is "\").
 */
type Lax = 'strict' | 'mask' | 'drop'

/** Bytes to text: UTF-8 with overlong forms accepted, stray bytes as Latin-1. */
function utf8(bytes: number[], lax: Lax): string {
  let out = ''
  const cont = (b: number): boolean => (b & 0xc0) === 0x80
  for (let i = 0; i < bytes.length; i++) {
    const [b0 = 0, b1 = -1, b2 = -1, b3 = -1] = bytes.slice(i, i + 4)
    if (b0 < 0x80) out += String.fromCharCode(b0)
    else if (b0 >= 0xc0 && b0 < 0xe0 && cont(b1)) {
      out += String.fromCharCode(((b0 & 0x1f) << 6) | (b1 & 0x3f))
      i += 1
    } else if (b0 < 0xc2 && b0 >= 0xc0 && b1 >= 0 && b1 < 0x80 && lax !== 'strict') {
      out += String.fromCharCode(lax === 'mask' ? ((b0 & 0x1f) << 6) | (b1 & 0x3f) : b1)
      i += 1
    } else if (b0 >= 0xe0 && b0 < 0xf0 && cont(b1) && cont(b2)) {
      out += String.fromCharCode(((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f))
      i += 2
    } else if (b0 >= 0xf0 && b0 < 0xf8 && cont(b1) && cont(b2) && cont(b3)) {
      out += String.fromCodePoint(
        ((b0 & 0x07) << 18) | ((b1 & 0x3f) << 12) | ((b2 & 0x3f) << 6) | (b3 & 0x3f),
      )
      i += 3
    } else out += String.fromCharCode(b0)
  }
  return out
}

/** One round of percent-decoding (`%XX` runs as UTF-8, `%uXXXX`); malformed escapes stay. */
function decodeOnce(s: string, lax: Lax): string {
  let out = ''
  const bytes: number[] = []
  for (let i = 0; i < s.length; i++) {
    const two = s.slice(i + 1, i + 3)
    if (s[i] === '%' && two.length === 2 && hex(two)) {
      bytes.push(parseInt(two, 16))
      i += 2
      continue
    }
    out += utf8(bytes.splice(0), lax)
    const four = s.slice(i + 2, i + 6)
    if (s[i] === '%' && (s[i + 1] === 'u' || s[i + 1] === 'U') && four.length === 4 && hex(four)) {
      out += String.fromCharCode(parseInt(four, 16))
      i += 5
      continue
    }
    out += s[i]
  }
  return out + utf8(bytes, lax)
}

/** Every reading of `path` the oracle knows: each decoding round, each lax mode, NFKC-folded or not. */
export function readings(path: string): string[] {
  const seen = new Set<string>()
  for (const lax of ['strict', 'mask', 'drop'] as const) {
    let s = path
    for (let round = 0; round < 10; round++) {
      seen.add(s)
      seen.add(s.normalize('NFKC'))
      const next = decodeOnce(s, lax)
      if (next === s) break
      s = next
    }
  }
  return [...seen]
}

const DOT_DOT = (reading: string): boolean =>
  reading.split(/[/\\]/).some((segment) => segment.split(';')[0] === '..')

/** The readings of `path` that hold a `..` segment. */
export const traversalReadings = (path: string): string[] => readings(path).filter(DOT_DOT)
