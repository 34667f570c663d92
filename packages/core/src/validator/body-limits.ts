/**
 * The one owner of request body limits: the validator's `maxBodyBytes`, the larger
 * limits proxy routes allow (`raise`, `setLimit`), the streaming count of bodies of
 * unknown length, and the 413 answered when one outgrows its limit after admission.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AegisRequestState, HeaderList, Rejection } from '../kernel/types.js'
import { ErrorCodes } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import { setWatchedLimit, watchBodySize } from '../node/body-watch.js'
import { answerInstead } from '../node/response.js'

/** The 413 answered when a body grows past its limit. */
export function bodyTooLarge(limit: number): Rejection {
  return problem({
    status: 413,
    code: ErrorCodes.BODY_TOO_LARGE,
    reason: 'body-size',
    title: 'Content Too Large',
    detail: `The request body may be at most ${limit} bytes.`,
    headers: { connection: 'close' },
  })
}

/** What the body limits need from the pipeline. */
export interface BodyLimitDeps {
  /** The validator's `maxBodyBytes` (infinite when the validator is off). */
  readonly maxBodyBytes: number
  /** The state of an admitted request. */
  stateOf: (req: IncomingMessage) => (AegisRequestState & { rejection: Rejection | undefined }) | undefined
  /** A request's own response where the state does not keep it (Express' `req.res`). */
  responseOf: (req: IncomingMessage) => ServerResponse | undefined
  /** Count a rejection. */
  count: (rejection: Rejection) => void
  /** The headers of an answer to a request with no state (once the engines are built). */
  baseHeaders: () => HeaderList
  /** The answer to a bug of ours (counted). */
  failed: (err: unknown) => Rejection
}

/** Body limits of one Aegis instance. */
export interface BodyLimits {
  readonly maxBodyBytes: number
  /** A reload changed the validator's `maxBodyBytes` (infinite: the validator is off). */
  setMax: (bytes: number) => void
  /** The largest body any proxy route allows (`maxBodyBytes` when no route allows more). */
  readonly ceiling: number
  /** A proxy route allows bodies up to `bytes`: declared lengths up to it pass admission. */
  raise: (bytes: number) => void
  /** Count the body of an admitted request as it streams, from its first chunk. */
  watch: (req: IncomingMessage) => void
  /** Change the limit of one admitted request (a proxy route's `maxBodyBytes`). */
  setLimit: (req: IncomingMessage, bytes: number) => void
}

/**
 * @example
 * const limits = createBodyLimits({ maxBodyBytes: 1_048_576, stateOf, responseOf, count, baseHeaders, failed })
 * limits.watch(req)
 */
export function createBodyLimits(deps: BodyLimitDeps): BodyLimits {
  let maxBodyBytes = deps.maxBodyBytes
  /**
   * A body outgrew its limit while the app (or the gateway) holds the request. Runs
   * inside Node's HTTP parser: it must not throw. The 413 goes on this request's own
   * response — never the socket's current one, which may answer an earlier pipelined
   * request — and the app's later writes on it are ignored (`answerInstead`).
   */
  const exceeded = (req: IncomingMessage): void => {
    try {
      const state = deps.stateOf(req)
      const rejection = bodyTooLarge(state?.bodyLimit ?? maxBodyBytes)
      deps.count(rejection)
      // Untracked (core used without an adapter): the socket's current response, if it is this request's.
      const current = (req.socket as { _httpMessage?: ServerResponse | null } | null)?._httpMessage
      const res = deps.responseOf(req) ?? (current?.req === req ? current : undefined)
      if (res === undefined) return void req.socket?.destroy()
      if (state !== undefined && state.rejection === undefined) state.rejection = rejection
      answerInstead(res, rejection, state?.headers ?? deps.baseHeaders())
    } catch (err) {
      deps.failed(err)
      req.socket?.destroy()
    }
  }
  // The largest limit a proxy route raised it to (routes a reload dropped included: a declared length only passes admission).
  let raised = 0
  return {
    get maxBodyBytes() {
      return maxBodyBytes
    },
    setMax(bytes) {
      maxBodyBytes = bytes
    },
    get ceiling() {
      return Math.max(maxBodyBytes, raised)
    },
    raise(bytes) {
      raised = Math.max(raised, bytes)
    },
    watch: (req) => watchBodySize(req, maxBodyBytes, exceeded),
    setLimit(req, bytes) {
      const state = deps.stateOf(req)
      if (state !== undefined) state.bodyLimit = bytes
      setWatchedLimit(req, bytes)
    },
  }
}
