/**
 * Path traversal detection. A path is refused when any of its decodings — raw,
 * percent-decoded once, twice, up to four times; with IIS `%uXXXX` escapes,
 * overlong UTF-8 (`%c0%ae`) and Unicode look-alikes of `.` `/` `\` folded; with `\`
 * read as `/` and `;parameters` removed — contains a `..` segment. Servers and
 * file systems behind a proxy disagree about each of these steps (Tomcat's `..;/`,
 * IIS's `%u` and overlong forms, Windows' backslash), so refuse them all.
 *
 * Also refuses NUL, CR and LF in any decoding: no legitimate path carries them and
 * they drive header injection and truncation bugs downstream.
 *
 * @example
 * inspectPath('/files/%252e%252e/etc/passwd') // 'traversal'
 */
export type PathVerdict = 'ok' | 'traversal' | 'control'

const MAX_DECODE_ROUNDS = 4

export function inspectPath(path: string): PathVerdict {
  // Hot path: nothing to decode and no dot-dot.
  if (path.indexOf('%') < 0 && path.indexOf('\\') < 0 && path.indexOf('..') < 0) return 'ok'
  let current = path
  for (let round = 0; round <= MAX_DECODE_ROUNDS; round++) {
    const folded = foldLookalikes(current)
    if (/[\0\r\n]/.test(folded)) return 'control'
    if (hasDotDotSegment(folded)) return 'traversal'
    const next = percentDecode(current)
    if (next === current) return 'ok'
    current = next
  }
  // Still changing after four rounds: nobody legitimate encodes that deep.
  return 'traversal'
}

function hasDotDotSegment(path: string): boolean {
  for (const raw of path.split(/[/\\]/)) {
    const semi = raw.indexOf(';')
    const segment = (semi < 0 ? raw : raw.slice(0, semi)).trim()
    if (segment === '..') return true
  }
  return false
}

const LOOKALIKES: Record<string, string> = {
  '\u2024': '.', // ONE DOT LEADER
  '\uff0e': '.', // FULLWIDTH FULL STOP
  '\u2215': '/', // DIVISION SLASH
  '\u2044': '/', // FRACTION SLASH
  '\uff0f': '/', // FULLWIDTH SOLIDUS
  '\u2216': '\\', // SET MINUS
  '\uff3c': '\\', // FULLWIDTH REVERSE SOLIDUS
}
const LOOKALIKE_RE = /[\u2024\uff0e\u2215\u2044\uff0f\u2216\uff3c]/g
const HAS_LOOKALIKE = /[\u2024\uff0e\u2215\u2044\uff0f\u2216\uff3c]/

function foldLookalikes(s: string): string {
  return HAS_LOOKALIKE.test(s) ? s.replace(LOOKALIKE_RE, (c) => LOOKALIKES[c] ?? c) : s
}

const HEX = /^[0-9A-Fa-f]+$/

/**
 * One round of percent-decoding, tolerant of malformed escapes (kept as is).
 * Decodes `%XX` bytes as UTF-8, folding overlong encodings of ASCII (which strict
 * decoders reject and some servers accept) to the ASCII character, and `%uXXXX`.
 *
 * @example
 * percentDecode('%c0%ae%2e') // '..'
 */
export function percentDecode(s: string): string {
  if (s.indexOf('%') < 0) return s
  const bytes: number[] = []
  let out = ''
  const flush = (): void => {
    if (bytes.length > 0) {
      out += decodeBytes(bytes)
      bytes.length = 0
    }
  }
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x25) {
      const two = s.slice(i + 1, i + 3)
      if (two.length === 2 && HEX.test(two)) {
        bytes.push(parseInt(two, 16))
        i += 2
        continue
      }
      const u = s.slice(i + 1, i + 6)
      if ((u[0] === 'u' || u[0] === 'U') && u.length === 5 && HEX.test(u.slice(1))) {
        flush()
        out += String.fromCharCode(parseInt(u.slice(1), 16))
        i += 5
        continue
      }
    }
    flush()
    out += s[i]
  }
  flush()
  return out
}

function decodeBytes(bytes: readonly number[]): string {
  let out = ''
  for (let i = 0; i < bytes.length; i++) {
    const b0 = bytes[i] ?? 0
    const b1 = bytes[i + 1] ?? -1
    const b2 = bytes[i + 2] ?? -1
    if (b0 < 0x80) {
      out += String.fromCharCode(b0)
    } else if ((b0 & 0xe0) === 0xc0 && (b1 & 0xc0) === 0x80) {
      out += String.fromCharCode(((b0 & 0x1f) << 6) | (b1 & 0x3f)) // includes overlong C0/C1
      i += 1
    } else if ((b0 === 0xc0 || b0 === 0xc1) && b1 >= 0 && b1 < 0x80) {
      // C0 and C1 only ever start overlong forms, never valid UTF-8 (RFC 3629 §3), so
      // no legitimate path has them before an escaped ASCII byte. Lax decoders read
      // the pair by masking the bits (IIS: `%c1%1c` is "\") or by dropping the
      // impossible lead (`%c0%5c` is "\", `%c0%2e` is "."); FuzzDB's
      // traversals-8-deep-exotic-encoding has both. Keep whichever reading is a dot
      // or a slash, so that both decoders' views are checked.
      const masked = String.fromCharCode(((b0 & 0x1f) << 6) | (b1 & 0x3f))
      out += masked === '.' || masked === '/' || masked === '\\' ? masked : String.fromCharCode(b1)
      i += 1
    } else if ((b0 & 0xf0) === 0xe0 && (b1 & 0xc0) === 0x80 && (b2 & 0xc0) === 0x80) {
      out += String.fromCharCode(((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f))
      i += 2
    } else {
      out += String.fromCharCode(b0) // stray byte: keep as Latin-1, never throw
    }
  }
  return out
}
