import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { ErrorCodes } from '../errors.js'
import { problem } from '../pipeline/problem.js'
import type { Rejection } from '../pipeline/types.js'

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

interface Watch {
  limit: number
  seen: number
  exceeded: boolean
  onExceed: (req: IncomingMessage) => void
}

const kWatch = Symbol('aegis.bodyWatch')
type Watched = IncomingMessage & { [kWatch]?: Watch }

// eslint-disable-next-line @typescript-eslint/unbound-method -- called with the request as `this`
const push = Readable.prototype.push

/**
 * Count body bytes as Node's HTTP parser delivers them (`parserOnBody` calls
 * `req.push`), without reading the stream: whoever consumes the body — a body
 * parser, a proxy, nobody — is unaffected until the limit is crossed. Past it,
 * chunks are dropped (the rest of the upload drains into nothing while the 413
 * goes out) and `onExceed` runs once. One shared function, no closure per request.
 */
function countingPush(this: Watched, chunk: unknown, encoding?: BufferEncoding): boolean {
  const watch = this[kWatch]
  if (watch !== undefined) {
    // Past the limit nothing more reaches the reader, not even the end of the body: a
    // gateway streaming it upstream must not see it complete (truncated). The 413 closes
    // the connection, which ends the request for everyone.
    if (watch.exceeded) return true
    if (chunk !== null && chunk !== undefined) {
      watch.seen += (chunk as { length: number }).length
      if (watch.seen > watch.limit) {
        watch.exceeded = true
        watch.onExceed(this)
        return true
      }
    }
  }
  return push.call(this, chunk, encoding)
}

/**
 * Enforce `limit` on a request body of unknown length (chunked).
 *
 * @example
 * watchBodySize(req, 1_048_576, (req) => answer413(req))
 */
export function watchBodySize(
  req: IncomingMessage,
  limit: number,
  onExceed: (req: IncomingMessage) => void,
): void {
  const watched = req as Watched
  const existing = watched[kWatch]
  if (existing !== undefined) {
    existing.limit = limit
    return
  }
  watched[kWatch] = { limit, seen: 0, exceeded: false, onExceed }
  watched.push = countingPush
}

/** Change the limit of a watched request (a gateway route may allow larger uploads). */
export function setWatchedLimit(req: IncomingMessage, limit: number): boolean {
  const watch = (req as Watched)[kWatch]
  if (watch === undefined) return false
  watch.limit = limit
  return true
}

/**
 * Answer a rejection directly on the socket's response — only for what happens
 * after admission (a body outgrowing its limit mid-stream), where no adapter is
 * on the stack. If the response has already started, the connection is destroyed:
 * that is the only way left to stop the upload.
 */
export function writeRawRejection(
  res: ServerResponse,
  rejection: Rejection,
  extraHeaders: ReadonlyArray<readonly [string, string]> = [],
): void {
  if (res.headersSent || res.writableEnded) {
    res.socket?.destroy()
    return
  }
  for (const [name, value] of extraHeaders) res.setHeader(name, value)
  const body = Buffer.from(rejection.body)
  res.writeHead(rejection.status, {
    ...rejection.headers,
    'content-length': String(body.length),
  })
  res.end(body)
}
