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
export const noUpstream = (retryAfterSeconds: number): Rejection =>
  problem({
    status: 503,
    code: ErrorCodes.NO_UPSTREAM,
    reason: 'no-upstream',
    title: 'Service Unavailable',
    type: IETF_PROBLEM.temporaryReducedCapacity,
    detail: 'No upstream service can take the request now.',
    headers: { 'retry-after': String(retryAfterSeconds) },
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

const TIMEOUTS = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
])

/** The answer for an upstream error (DESIGN: refused / reset → 502; connect, header or idle timeout → 504). */
export function upstreamFailure(err: unknown): Rejection {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && TIMEOUTS.has(code) ? upstreamTimeout : upstreamUnavailable
}

/**
 * Whether the upstream went away before answering — the connection reset or
 * closed — so an idempotent request may be sent again (Envoy's `reset`).
 */
export function isReset(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED'
}

/** Whether an upstream error means the host was not reached at all (safe to try another host). */
export function isConnectFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return (
    code === 'ECONNREFUSED' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN'
  )
}

/** An error status injected by the route's `chaos` settings. */
export const faultInjected = (status: number): Rejection =>
  problem({
    status,
    code: ErrorCodes.FAULT_INJECTED,
    reason: 'fault-injected',
    title: STATUS_CODES[status] ?? 'Error',
    detail: "This error was injected by the route's chaos settings.",
  })
