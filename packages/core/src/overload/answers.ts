import { ErrorCodes } from '../kernel/errors.js'
import { IETF_PROBLEM, problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'

/** 503 while the process sheds load (event-loop lag, adaptive concurrency limit). */
export function overloaded(reason: 'event-loop' | 'concurrency', retryAfterSeconds: number): Rejection {
  return problem({
    status: 503,
    code: ErrorCodes.OVERLOADED,
    reason: reason === 'event-loop' ? 'overloaded' : 'concurrency',
    type: IETF_PROBLEM.temporaryReducedCapacity,
    title: 'Service Unavailable',
    detail:
      reason === 'event-loop'
        ? 'The server is overloaded (event loop delayed); retry later.'
        : 'The server is at its concurrency limit; retry later.',
    headers: { 'retry-after': String(retryAfterSeconds) },
  })
}
