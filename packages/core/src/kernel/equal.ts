/**
 * Structural equality of parsed options, as a reload compares them: plain objects and
 * arrays by content, regular expressions by source and flags, everything else (functions,
 * a logger, a Redis client, a registry) by reference.
 *
 * @example
 * sameValue({ limit: 10, skip: fn }, { limit: 10, skip: fn }) // true
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  if (a instanceof RegExp) return b instanceof RegExp && a.source === b.source && a.flags === b.flags
  const proto = Object.getPrototypeOf(a) as unknown
  if (proto !== Object.getPrototypeOf(b)) return false
  // Objects that are not data (a logger, a client, a Set) are the same only when they are the same object.
  if (proto !== Object.prototype && proto !== null) return false
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined)
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined)
  if (ka.length !== kb.length) return false
  for (const k of ka)
    if (!sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  return true
}
