/**
 * What an event may leave in the trail: plain JSON data (what a hash can be computed
 * over, and what SQLite and Redis keep), bounded, and without secrets. A field named
 * like a secret (kernel/redact.ts: `password`, `token`, `authorization`, `cookie`, …) is
 * replaced whole; in every string, the credentials of a URL, a bearer or basic
 * credential, a JWT and the value of a query parameter named like a secret are hidden.
 * A JSON Patch operation on a secret's path (`/admin/token`) has its value replaced.
 */
import { hideUrlCredentials, SECRET_KEY } from '../kernel/redact.js'

export const REDACTED = '[redacted]'
const MAX_DEPTH = 8
const MAX_STRING = 2_048
const MAX_ITEMS = 500
const MAX_KEYS = 200

// `Bearer abc`, `Basic dXNlcjpw…`, a JWT anywhere, `?token=…` / `&api_key=…` in a URL or a query.
const SCHEME_CREDENTIALS = /\b(Bearer|Basic|Digest|Token)\s+[A-Za-z0-9._~+/=-]{4,}/gi
const JWT = /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g
const SECRET_PARAM =
  /([?&;](?:[^=&;#\s]*?(?:pass(?:word)?|secret|token|api[-_]?key|auth|credential|session|sig(?:nature)?)[^=&;#\s]*)=)[^&;#\s]*/gi

/** A string as it may be kept: secrets inside hidden, at most 2,048 characters. */
export function redactString(text: string): string {
  let s = text
  if (s.includes('://')) s = hideUrlCredentials(s)
  s = s.replace(SCHEME_CREDENTIALS, `$1 ${REDACTED}`).replace(JWT, REDACTED)
  if (s.includes('=')) s = s.replace(SECRET_PARAM, `$1${REDACTED}`)
  return s.length > MAX_STRING ? `${s.slice(0, MAX_STRING - 1)}…` : s
}

const isSecretPointer = (pointer: unknown): boolean =>
  typeof pointer === 'string' && pointer.split('/').some((segment) => SECRET_KEY.test(segment))

const isPatchOperation = (v: Record<string, unknown>): boolean =>
  typeof v.op === 'string' && typeof v.path === 'string'

/**
 * `value` as plain, bounded, redacted JSON data: functions, symbols and `undefined` are
 * dropped; a `Date` becomes its ISO text, a bigint its digits, a `Map` an object, a `Set`
 * an array, a typed array or buffer `[N bytes]`; non-finite numbers become `null`; a cycle
 * or what lies past eight levels becomes `[…]`.
 */
export function toAuditData(value: unknown, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  switch (typeof value) {
    case 'string':
      return redactString(value)
    case 'number':
      return Number.isFinite(value) ? value : null
    case 'boolean':
      return value
    case 'bigint':
      return value.toString()
    case 'object':
      break
    default:
      return undefined
  }
  if (value === null) return null
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString()
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return `[${value.byteLength} bytes]`
  if (depth >= MAX_DEPTH || seen.has(value)) return '[…]'
  seen.add(value)
  try {
    if (Array.isArray(value) || value instanceof Set) {
      const items = [...(value as Iterable<unknown>)]
      const out = items.slice(0, MAX_ITEMS).map((v) => toAuditData(v, depth + 1, seen) ?? null)
      if (items.length > MAX_ITEMS) out.push(`[… ${items.length - MAX_ITEMS} more]`)
      return out
    }
    const entries: [string, unknown][] =
      value instanceof Map ? [...value].map(([k, v]) => [String(k), v]) : Object.entries(value)
    const out: Record<string, unknown> = {}
    const patch = isPatchOperation(value as Record<string, unknown>)
    const secretPath = patch && isSecretPointer((value as Record<string, unknown>).path)
    let kept = 0
    for (const [key, v] of entries) {
      if (kept === MAX_KEYS) {
        out['…'] = `${entries.length - MAX_KEYS} more keys`
        break
      }
      const name = redactString(key)
      if (SECRET_KEY.test(key) || (secretPath && key === 'value')) {
        out[name] = REDACTED
      } else {
        const data = toAuditData(v, depth + 1, seen)
        if (data === undefined) continue
        out[name] = data
      }
      kept++
    }
    return out
  } finally {
    seen.delete(value)
  }
}

/**
 * The canonical text of JSON data, what a hash is computed over: keys sorted by code
 * unit, no white space, numbers and strings as `JSON.stringify` writes them. Data made by
 * {@link toAuditData} and read back with `JSON.parse` gives the same text.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`
  const keys = Object.keys(value).sort()
  let out = '{'
  for (const key of keys) {
    const v = (value as Record<string, unknown>)[key]
    if (v === undefined) continue
    if (out.length > 1) out += ','
    out += `${JSON.stringify(key)}:${canonicalJson(v)}`
  }
  return `${out}}`
}
