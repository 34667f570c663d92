/**
 * `Cache-Control` as a shared cache reads it (RFC 9111 §5.2). Hand-written rather than a
 * dependency: the npm parsers either drop unknown directives or throw on malformed
 * fields, and undici keeps its own parser internal. This one never throws: a malformed
 * member is skipped, a directive given twice keeps its first value (§4.2.1: invalid or
 * duplicated freshness information makes the response stale — see `maxAgeOf`).
 */

/** The directives of one or more `Cache-Control` fields, names lower-cased. */
export type Directives = ReadonlyMap<string, string | true>

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * Parse `Cache-Control` (a field value, or the values of repeated fields).
 *
 * @example
 * parseCacheControl('public, max-age=60, no-cache="set-cookie"').get('max-age') // '60'
 */
export function parseCacheControl(field: string | readonly string[] | undefined): Directives {
  const directives = new Map<string, string | true>()
  if (field === undefined) return directives
  const text = typeof field === 'string' ? field : field.join(',')
  let i = 0
  while (i < text.length) {
    // One member: name [= token | quoted-string], up to the next comma outside quotes.
    let end = i
    let quoted = false
    for (; end < text.length; end++) {
      const c = text[end]
      if (c === '"') quoted = !quoted
      else if (c === '\\' && quoted) end++
      else if (c === ',' && !quoted) break
    }
    const member = text.slice(i, end).trim()
    i = end + 1
    if (member === '') continue
    const eq = member.indexOf('=')
    const name = (eq < 0 ? member : member.slice(0, eq)).trim().toLowerCase()
    if (!TOKEN.test(name) || directives.has(name)) {
      if (directives.has(name)) directives.set(`${name}#duplicate`, true)
      continue
    }
    if (eq < 0) {
      directives.set(name, true)
      continue
    }
    let value = member.slice(eq + 1).trim()
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2)
      value = value.slice(1, -1).replace(/\\(.)/g, '$1')
    directives.set(name, value)
  }
  return directives
}

/**
 * A delta-seconds directive (`max-age`, `s-maxage`, `stale-if-error`) in seconds:
 * `undefined` when absent, `0` when malformed or duplicated (RFC 9111 §1.2.2, §4.2.1:
 * such a response is to be taken as stale).
 *
 * @example
 * secondsOf(parseCacheControl('max-age=60'), 'max-age') // 60
 */
export function secondsOf(directives: Directives, name: string): number | undefined {
  const value = directives.get(name)
  if (value === undefined) return undefined
  if (value === true || directives.has(`${name}#duplicate`) || !/^\d+$/.test(value)) return 0
  // §1.2.2: a value too large to represent is taken as 2^31 (about 68 years).
  return Math.min(Number(value), 2 ** 31)
}
