/**
 * What a reload says of two configurations: a content hash of each, and the RFC 6902 patch
 * from one to the other with every secret redacted (admin/redact.ts), as the audit trail,
 * the bus and the admin API show it.
 */
import { createHash } from 'node:crypto'
import { createPatch, type Operation } from 'rfc6902'
import { redactConfig } from '../admin/redact.js'

export type { Operation as PatchOperation } from 'rfc6902'

// Objects that are not data (a function, a logger, a Redis client) by identity: a new one is a change.
const ids = new WeakMap<object, number>()
let nextId = 0
const idOf = (value: object): number => {
  let id = ids.get(value)
  if (id === undefined) ids.set(value, (id = ++nextId))
  return id
}

/** One canonical text of a configuration: keys sorted, secrets kept (a new token is a new configuration). */
function canonical(value: unknown): string {
  if (value === undefined) return 'null'
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : JSON.stringify(String(value))
  if (typeof value === 'bigint' || typeof value === 'symbol') return JSON.stringify(String(value))
  if (typeof value === 'function') return `"[function#${idOf(value)}]"`
  if (value instanceof RegExp) return JSON.stringify(String(value))
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto !== Object.prototype && proto !== null) return `"[object#${idOf(value)}]"`
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`
}

/**
 * A configuration's content hash: 16 hex digits of SHA-256 over its canonical text. Two
 * parsed configurations have the same hash when they are the same data with the same
 * functions and objects (by identity, within this process).
 *
 * @example
 * configHash(aegis.config) // 'a3f1…'
 */
export function configHash(config: unknown): string {
  return createHash('sha256').update(canonical(config)).digest('hex').slice(0, 16)
}

/**
 * The RFC 6902 patch from `before` to `after`, both redacted first: no secret enters a
 * diff (a changed token shows as no operation; the hashes tell it changed).
 *
 * @example
 * configDiff(old, next) // [{ op: 'replace', path: '/limiter/limit', value: 200 }]
 */
export function configDiff(before: unknown, after: unknown): Operation[] {
  return createPatch(redactConfig(before), redactConfig(after))
}
