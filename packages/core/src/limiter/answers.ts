import { ErrorCodes } from '../kernel/errors.js'
import { IETF_PROBLEM, problem } from '../kernel/problem.js'
import type { HeaderList, Rejection } from '../kernel/types.js'
import type { Verdict } from './gcra.js'

/** What the answers need to know of a policy. */
export interface PolicyInfo {
  readonly name: string
  readonly points: number
  readonly duration: number
  /** `"name";q=…;w=…`, built once. */
  readonly policyItem: string
  /** `"name"`, built once. */
  readonly nameItem: string
  /** The `RateLimit-Policy` field of a request this policy alone limits, built once. */
  readonly policyField: readonly [string, string]
}

export type HeaderStyle = 'ietf' | 'legacy' | 'x'

/** An RFC 8941 sf-string (policy names are printable ASCII; route specs may hold `"` or `\`). */
export const sfString = (s: string): string => `"${s.replace(/[\\"]/g, '\\$&')}"`

export const policyItem = (name: string, points: number, duration: number): string =>
  `${sfString(name)};q=${points};w=${Math.ceil(duration)}`

// Whole seconds, rounded up; a microsecond of floating-point noise does not add one.
const seconds = (ms: number): number => Math.max(0, Math.ceil((ms - 1e-3) / 1000))

/**
 * The rate-limit header fields of one request: the IETF draft's `RateLimit-Policy`
 * and `RateLimit` (one list member per policy), and on request the older
 * `RateLimit-Limit/-Remaining/-Reset` and `X-RateLimit-*` for the strictest policy.
 */
export function limitHeaders(
  styles: readonly HeaderStyle[],
  policies: readonly PolicyInfo[],
  verdicts: readonly Verdict[],
): HeaderList {
  // The common case: one policy, the IETF fields only (its policy field built once).
  if (policies.length === 1 && styles.length === 1 && styles[0] === 'ietf') {
    const v = verdicts[0] as Verdict
    const p = policies[0] as PolicyInfo
    return [p.policyField, ['ratelimit', `${p.nameItem};r=${v.remaining};t=${seconds(v.resetMs)}`]]
  }
  const out: [string, string][] = []
  let strictest = 0
  for (let i = 1; i < policies.length; i++) {
    const a = verdicts[i] as Verdict
    const b = verdicts[strictest] as Verdict
    if (a.remaining < b.remaining || (a.remaining === b.remaining && a.resetMs > b.resetMs)) strictest = i
  }
  for (const style of styles) {
    if (style === 'ietf') {
      let field = ''
      for (let i = 0; i < policies.length; i++) {
        const v = verdicts[i] as Verdict
        if (i > 0) field += ', '
        field += `${(policies[i] as PolicyInfo).nameItem};r=${v.remaining};t=${seconds(v.resetMs)}`
      }
      out.push(['ratelimit-policy', policies.map((p) => p.policyItem).join(', ')])
      out.push(['ratelimit', field])
    } else {
      const p = policies[strictest] as PolicyInfo
      const v = verdicts[strictest] as Verdict
      if (style === 'legacy') {
        out.push(['ratelimit-limit', String(p.points)])
        out.push(['ratelimit-remaining', String(v.remaining)])
        out.push(['ratelimit-reset', String(seconds(v.resetMs))])
      } else {
        // GitHub's convention: the reset as a Unix time in seconds.
        out.push(['x-ratelimit-limit', String(p.points)])
        out.push(['x-ratelimit-remaining', String(v.remaining)])
        out.push(['x-ratelimit-reset', String(Math.ceil((Date.now() + v.resetMs) / 1000))])
      }
    }
  }
  return out
}

/** 429, problem type `quota-exceeded` with the violated policies (IETF rate-limit draft). */
export function quotaExceeded(violated: readonly string[], retryMs: number, banned: boolean): Rejection {
  const retryAfter = Math.max(1, seconds(retryMs))
  return problem({
    status: 429,
    code: ErrorCodes.RATE_LIMITED,
    reason: banned ? 'rate-limit-blocked' : 'rate-limit',
    type: IETF_PROBLEM.quotaExceeded,
    title: 'Request cannot be satisfied as assigned quota has been exceeded',
    detail: banned
      ? `Too many requests: this client is blocked for ${retryAfter} s.`
      : `Too many requests: retry after ${retryAfter} s.`,
    headers: { 'retry-after': String(retryAfter) },
    extensions: { 'violated-policies': violated },
  })
}

/** 403 for a client on the deny list. Built once. */
export const clientDenied: Rejection = problem({
  status: 403,
  code: ErrorCodes.CLIENT_DENIED,
  reason: 'client-denied',
  title: 'Forbidden',
  detail: 'This client address is not allowed.',
})

/** 503 when a `failClosed` policy cannot reach its store. */
export function limiterUnavailable(retryAfterSeconds: number): Rejection {
  return problem({
    status: 503,
    code: ErrorCodes.LIMITER_UNAVAILABLE,
    reason: 'limiter-unavailable',
    type: IETF_PROBLEM.temporaryReducedCapacity,
    title: 'Service Unavailable',
    detail: 'The rate-limit store is unavailable and this route fails closed.',
    headers: { 'retry-after': String(retryAfterSeconds) },
  })
}
