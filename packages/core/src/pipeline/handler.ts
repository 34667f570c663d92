import type { IncomingMessage, ServerResponse } from 'node:http'
import { ErrorCodes } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'
import { writeRawRejection } from '../node/response.js'
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
  const appFailed = (res: ServerResponse, err: unknown): void => {
    logger?.error({ err }, 'request handler failed')
    writeRawRejection(res, failed(err))
  }
  const after = (req: IncomingMessage, res: ServerResponse, state: Dispatched): void => {
    if (state === undefined) return // answered by Aegis
    if (state.rejection !== undefined) return writeRawRejection(res, state.rejection)
    if (app === undefined) return writeRawRejection(res, notFound)
    try {
      const result = app(req, res)
      if (result instanceof Promise) result.catch((err: unknown) => appFailed(res, err))
    } catch (err) {
      appFailed(res, err)
    }
  }
  return function aegisHandler(req, res) {
    const dispatched = flow.dispatch(req, res)
    if (dispatched instanceof Promise)
      dispatched.then(
        (state) => after(req, res, state),
        (err: unknown) => writeRawRejection(res, failed(err)),
      )
    else after(req, res, dispatched)
  }
}
