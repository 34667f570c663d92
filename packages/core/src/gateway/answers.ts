import { STATUS_CODES } from 'node:http'
import { ErrorCodes } from '../kernel/errors.js'
import { IETF_PROBLEM, problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'

/** 502: the upstream refused or reset the connection, or answered what is not HTTP. */
export const upstreamUnavailable = problem({
  status: 502,
  code: ErrorCodes.UPSTREAM_UNAVAILABLE,
  reason: 'upstream-unavailable',
  title: 'Bad Gateway',
  detail: 'The upstream service could not be reached or did not answer properly.',
})

/** 504: no connection, no response headers or no response body data in time. */
export const upstreamTimeout = problem({
  status: 504,
  code: ErrorCodes.UPSTREAM_TIMEOUT,
  reason: 'upstream-timeout',
  title: 'Gateway Timeout',
  detail: 'The upstream service did not answer in time.',
})

/** 503: no upstream can take the request now (none healthy, every breaker open, retry budget spent). */
export const noUpstream: Rejection = problem({
  status: 503,
  code: ErrorCodes.NO_UPSTREAM,
  reason: 'no-upstream',
  title: 'Service Unavailable',
  type: IETF_PROBLEM.temporaryReducedCapacity,
  detail: 'No upstream service can take the request now.',
  headers: { 'retry-after': '1' },
})

/**
 * 503: every connection to the upstream is busy and the request could not wait
 * for one (the route's `maxPending` requests already wait, or it waited
 * `timeouts.queue`). The same code as `noUpstream`; its own reason (metric label).
 */
export const upstreamSaturated = problem({
  status: 503,
  code: ErrorCodes.NO_UPSTREAM,
  reason: 'upstream-saturated',
  title: 'Service Unavailable',
  type: IETF_PROBLEM.temporaryReducedCapacity,
  detail: 'Every connection to the upstream service is busy; no request can wait for one now.',
  headers: { 'retry-after': '1' },
})

/** 403: the target a route's `router` chose is not one the gateway may reach. */
export const targetRefused = problem({
  status: 403,
  code: ErrorCodes.TARGET_REFUSED,
  reason: 'target-refused',
  title: 'Forbidden',
  detail: 'The upstream chosen for this request is not one the gateway may reach.',
})

/**
 * 403: an `Upgrade` to a protocol the route does not proxy (its `upgrades`), as
 * Envoy answers an upgrade its route does not enable.
 */
export const upgradeRefused = problem({
  status: 403,
  code: ErrorCodes.UPGRADE_REFUSED,
  reason: 'upgrade-refused',
  title: 'Forbidden',
  detail: 'This route does not switch to the protocol the request asked for.',
})

/**
 * 403: a WebSocket upgrade met on the plain-request path, where it cannot be
 * switched (see `unroutedUpgrade` in route.ts): refused rather than answered 200.
 */
export const upgradeUnrouted = problem({
  status: 403,
  code: ErrorCodes.UPGRADE_REFUSED,
  reason: 'upgrade-unrouted',
  title: 'Forbidden',
  detail: 'This route cannot take protocol upgrades where it is mounted.',
})

/** 500: an app's body parser read the request body and left nothing the gateway can re-send. */
export const bodyConsumed = problem({
  status: 500,
  code: ErrorCodes.BODY_CONSUMED,
  reason: 'body-consumed',
  title: 'Internal Server Error',
  detail: 'The request body was read before the gateway and cannot be forwarded.',
})

/**
 * What each upstream error code means, in one table (as http-proxy-middleware's
 * `status-code.ts`): the status it is answered with (DESIGN: refused / reset → 502;
 * connect, header or idle timeout → 504), whether the host was never reached (so
 * another host may be tried), whether it is a timeout (the balancer and breaker
 * count those apart), and whether the upstream went away before answering (so an
 * idempotent request may be sent again: Envoy's `reset`). A code not listed is a
 * 502 of no particular kind.
 */
interface UpstreamError {
  readonly status: 502 | 504
  readonly unreached?: true
  readonly timeout?: true
  readonly reset?: true
}
const UNREACHED: UpstreamError = { status: 502, unreached: true }
const TIMED_OUT: UpstreamError = { status: 504, timeout: true }
const RESET: UpstreamError = { status: 502, reset: true }
const UPSTREAM_ERRORS: Readonly<Record<string, UpstreamError>> = {
  ECONNREFUSED: UNREACHED,
  EHOSTUNREACH: UNREACHED,
  ENETUNREACH: UNREACHED,
  ENOTFOUND: UNREACHED,
  EAI_AGAIN: UNREACHED,
  UND_ERR_CONNECT_TIMEOUT: { status: 504, unreached: true, timeout: true },
  UND_ERR_HEADERS_TIMEOUT: TIMED_OUT,
  UND_ERR_BODY_TIMEOUT: TIMED_OUT,
  ETIMEDOUT: TIMED_OUT,
  UND_ERR_SOCKET: RESET,
  ECONNRESET: RESET,
  EPIPE: RESET,
  UND_ERR_CLOSED: RESET,
}

/** The table's entry for an error, if its `code` is one the gateway tells apart. */
const upstreamError = (err: unknown): UpstreamError | undefined => {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && Object.hasOwn(UPSTREAM_ERRORS, code) ? UPSTREAM_ERRORS[code] : undefined
}

/** The answer for an upstream error. */
export function upstreamFailure(err: unknown): Rejection {
  return upstreamError(err)?.status === 504 ? upstreamTimeout : upstreamUnavailable
}

/** Whether the upstream went away before answering, so an idempotent request may be sent again. */
export const isReset = (err: unknown): boolean => upstreamError(err)?.reset === true

/** Whether an upstream error means the host was not reached at all (safe to try another host). */
export const isConnectFailure = (err: unknown): boolean => upstreamError(err)?.unreached === true

/** Whether an upstream error is a timeout (connect, headers, body, or the system's). */
export const isTimeout = (err: unknown): boolean => upstreamError(err)?.timeout === true

/** An error status injected by the route's `chaos` settings. */
export const faultInjected = (status: number): Rejection =>
  problem({
    status,
    code: ErrorCodes.FAULT_INJECTED,
    reason: 'fault-injected',
    title: STATUS_CODES[status] ?? 'Error',
    detail: "This error was injected by the route's chaos settings.",
  })
