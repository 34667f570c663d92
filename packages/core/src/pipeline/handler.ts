import type { IncomingMessage, ServerResponse } from 'node:http'
import { ErrorCodes } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { problem } from '../kernel/problem.js'
import type { AegisRequestState, Rejection } from '../kernel/types.js'
import { answeredByAegis, cut, silence, writeRawRejection } from '../node/response.js'
import type { Dispatched, Flow } from './admission.js'

/** A `node:http` request listener. */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void

const notFound = problem({
  status: 404,
  code: ErrorCodes.NOT_FOUND,
  reason: 'not-found',
  title: 'Not Found',
  detail: 'Nothing is served at this path.',
})

// The app's failure, not Aegis': neither counted as a rejection nor logged as a bug of ours.
const appFailure = problem({
  status: 500,
  code: ErrorCodes.INTERNAL,
  reason: 'app',
  title: 'Internal Server Error',
  detail: 'The request handler failed.',
})

/** Whatever `then` is, asked inside the caller's try: a revoked Proxy throws on the read. */
const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'

/**
 * The fourth adapter: Aegis as a plain `node:http` request listener, in front of an
 * app that is one too (or alone, with its endpoints and proxy routes). Rejections are
 * written raw, as problem+json; the app's own failures are the app's, except a throw
 * (or a rejected promise) out of it, answered 500 rather than left to crash the process.
 *
 * @example
 * http.createServer(createHandler(flow, app, logger, (err) => flow.failed(err)))
 */
export function createHandler(
  flow: Pick<Flow, 'dispatch'>,
  app: ((req: IncomingMessage, res: ServerResponse) => unknown) | undefined,
  logger: Logger | undefined,
  failed: (err: unknown) => Rejection,
): RequestListener {
  /** Log an error of the app: each one (it is not ours to deduplicate), never throwing. */
  const report = (err: unknown): void => {
    if (logger !== undefined) return logger.error({ err }, 'request handler failed')
    try {
      process.emitWarning(`the request handler failed and was answered 500: ${String(err)}`, {
        code: ErrorCodes.INTERNAL,
        type: 'AegisWarning',
      })
    } catch {
      // An error whose String() throws (a revoked Proxy): nothing printable to report.
    }
  }
  /**
   * The app threw, or its promise rejected. Runs in Node's 'request' listener or a
   * promise reaction: nothing may escape it.
   */
  const appFailed = (res: ServerResponse, state: AegisRequestState, err: unknown): void => {
    // Aegis answered in the app's place (a body past its limit): the app's read failed of it.
    if (answeredByAegis(res)) return
    report(err)
    try {
      // Answered already: the answer stands. Destroying the socket now could cut it short, and
      // would lose the pipelined answers queued behind it on the connection.
      if (res.writableEnded) return
      // Started: only closing the connection tells the client the answer is incomplete, now or,
      // pipelined, when its turn comes (`cut`); without that, the connection would hang behind it.
      if (res.headersSent) return cut(res)
      // The 500 is ours: none of the app's half-set fields (a Set-Cookie, a Content-Encoding
      // that would mislabel the problem body), only Aegis' own.
      for (const name of res.getHeaderNames()) res.removeHeader(name)
      writeRawRejection(res, appFailure, state.headers)
      // The app may still hold `res` (a timer of its own): its late calls must not throw. The status
      // is what was written: the 500, or what an engine answered in its place (the ghost cache).
      silence(res, res.statusCode)
    } catch {
      res.destroy()
    }
  }
  /** Write Aegis' answer (or, given `err`, the answer to it); in a listener or a reaction, so never throwing. */
  const answer = (res: ServerResponse, rejection: Rejection | undefined, err?: unknown): void => {
    try {
      writeRawRejection(res, rejection ?? failed(err))
    } catch {
      res.destroy()
    }
  }
  const after = (req: IncomingMessage, res: ServerResponse, state: Dispatched): void => {
    if (state === undefined) return // answered by Aegis
    if (state.rejection !== undefined) return answer(res, state.rejection)
    if (app === undefined) return answer(res, notFound)
    try {
      const result = app(req, res)
      // Any thenable, not only this realm's Promise (an async function from a vm context):
      // a rejection nobody handles ends the process.
      if (result instanceof Promise) result.then(undefined, (err: unknown) => appFailed(res, state, err))
      else if (isThenable(result))
        Promise.resolve(result).then(undefined, (err: unknown) => appFailed(res, state, err))
    } catch (err) {
      appFailed(res, state, err)
    }
  }
  return function aegisHandler(req, res) {
    const dispatched = flow.dispatch(req, res)
    if (dispatched instanceof Promise)
      dispatched.then(
        (state) => after(req, res, state),
        // `dispatch` never rejects; were it to, that is a bug of ours, answered and counted as one.
        (err: unknown) => answer(res, undefined, err),
      )
    else after(req, res, dispatched)
  }
}
