import type { ErrorCode } from './errors.js'
import type { Rejection } from './types.js'

/** Where each of our error codes is documented; problem `type` URIs point here. */
export const ERRORS_DOC = 'https://github.com/aegis-js/aegis/blob/main/docs/errors.md'

/** Problem types of the IETF rate-limit draft, for the engines that answer with them. */
export const IETF_PROBLEM = {
  quotaExceeded: 'https://iana.org/assignments/http-problem-types#quota-exceeded',
  temporaryReducedCapacity: 'https://iana.org/assignments/http-problem-types#temporary-reduced-capacity',
  abnormalUsageDetected: 'https://iana.org/assignments/http-problem-types#abnormal-usage-detected',
} as const

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8'

export interface ProblemInit {
  readonly status: number
  readonly code: ErrorCode
  readonly reason: string
  readonly title: string
  readonly detail?: string
  /** Overrides the documented type, e.g. an IETF problem type. */
  readonly type?: string
  readonly headers?: Readonly<Record<string, string>>
  /** Extension members (RFC 9457 §3.2). */
  readonly extensions?: Readonly<Record<string, unknown>>
}

/**
 * Build an RFC 9457 problem rejection. Bodies never echo request input (no
 * reflected content), so most can be built once at startup and reused.
 *
 * @example
 * const r = problem({ status: 405, code: ErrorCodes.METHOD_NOT_ALLOWED, reason: 'method',
 *   title: 'Method Not Allowed', headers: { allow: 'GET, HEAD' } })
 */
export function problem(init: ProblemInit): Rejection {
  const body = JSON.stringify({
    type: init.type ?? `${ERRORS_DOC}#${init.code.toLowerCase()}`,
    title: init.title,
    status: init.status,
    ...(init.detail === undefined ? {} : { detail: init.detail }),
    code: init.code,
    ...init.extensions,
  })
  return Object.freeze({
    status: init.status,
    reason: init.reason,
    headers: Object.freeze({
      'content-type': PROBLEM_CONTENT_TYPE,
      'cache-control': 'no-store',
      ...init.headers,
    }),
    body,
  })
}
