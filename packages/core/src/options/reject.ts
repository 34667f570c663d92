import { WarningCodes } from '../kernel/errors.js'
import type { Rejection } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import { isFramingHeader } from '../kernel/option-helpers.js'

// Compiled once: RFC 9110 §5.1 field names, §5.5 field values without control characters.
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/** Why `value` cannot be written as a rejection, or `undefined` when it can. */
/** What is wrong with a value returned as a rejection (`undefined`: nothing; it can be written). */
export function rejectionProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'it is not an object'
  const r = value as Partial<Record<keyof Rejection, unknown>>
  // Only an error status is a rejection: a 2xx/3xx would tell the client its request was served.
  if (typeof r.status !== 'number' || !Number.isInteger(r.status) || r.status < 400 || r.status > 599)
    return 'status must be an integer HTTP error status, 400-599'
  if (typeof r.reason !== 'string') return 'reason must be a string'
  if (typeof r.body !== 'string') return 'body must be a string'
  if (typeof r.headers !== 'object' || r.headers === null) return 'headers must be an object'
  for (const [name, v] of Object.entries(r.headers)) {
    if (!FIELD_NAME.test(name)) return `header ${JSON.stringify(name)} is not a field name`
    if (isFramingHeader(name)) return `header ${name} frames the message: Node sets it from the body`
    if (typeof v !== 'string' || !FIELD_VALUE.test(v))
      return `header ${name} must be a string without control characters`
  }
  return undefined
}

/**
 * What `onReject` returned, if it can be written; otherwise the original
 * rejection, with one warning per instance (`AEGIS_WARN_INVALID_REJECTION`).
 * A hook's mistake (a 200, a status of `'429'`, a header with CRLF) only shows
 * with traffic, and must never reach the socket: Node would throw from inside
 * the adapter, or the client would read a refusal as a success.
 *
 * @example
 * rejection = checkedRejection(onReject(rejection, req), rejection, warn)
 */
export function checkedRejection(returned: unknown, original: Rejection, warn: Warn): Rejection {
  if (returned === undefined || returned === null || returned === original) return original
  const problem = rejectionProblem(returned)
  if (problem === undefined) return returned as Rejection
  warn(
    WarningCodes.INVALID_REJECTION,
    `onReject returned a rejection that cannot be written (${problem}); Aegis answers with its own instead.`,
  )
  return original
}
