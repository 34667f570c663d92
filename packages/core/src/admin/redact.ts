/**
 * The configuration as the admin API shows it: plain JSON, every secret replaced. Values
 * under a secret's name (a token, a password, an API key) become `[redacted]`, URLs lose
 * their credentials, functions and objects that are not data (a logger, a Redis client)
 * are named, not shown.
 */
import { hideUrlCredentials, SECRET_KEY } from '../kernel/redact.js'

export const REDACTED = '[redacted]'

/** What describes a secret without being one: a token's name and role, an API key's header. */
const DESCRIPTIVE = /^(name|role|header)$/

/**
 * @example
 * redactConfig({ admin: { token: 's3cr3t…' }, store: { redis: 'redis://u:pw@h:6379' } })
 * // { admin: { token: '[redacted]' }, store: { redis: 'redis://***@h:6379' } }
 */
export function redactConfig(value: unknown, secret = false): unknown {
  if (value === undefined || value === null) return value ?? null
  if (typeof value === 'function') return '[function]'
  if (value instanceof RegExp) return String(value)
  if (typeof value === 'string') return secret ? REDACTED : hideUrlCredentials(value)
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value)
  if (typeof value === 'boolean') return value
  if (typeof value === 'bigint' || typeof value === 'symbol') return String(value)
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, secret))
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto !== Object.prototype && proto !== null) return `[${value.constructor?.name ?? 'object'}]`
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === undefined) continue
    out[k] = redactConfig(v, SECRET_KEY.test(k) || (secret && !DESCRIPTIVE.test(k)))
  }
  return out
}
