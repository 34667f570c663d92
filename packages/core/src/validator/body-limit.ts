import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { AegisError, ErrorCodes } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'

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

const kAnswered = Symbol('aegis.answeredInstead')
type Answered = ServerResponse & { [kAnswered]?: true }

/** True once Aegis answered this response in place of the app ({@link answerInstead}). */
export const answeredByAegis = (res: ServerResponse): boolean => (res as Answered)[kAnswered] === true

// What the app (or its framework) may still call on a response Aegis took over:
// every call that would touch headers or the body becomes a no-op, so a handler
// that answers late — Express' finalhandler after the body ends, a handler's
// timer — cannot throw ERR_HTTP_HEADERS_SENT into the host process. A callback
// given to `end()`/`write()` still runs, as it would once the data were flushed.
const lastCallback = (args: readonly unknown[]): (() => void) | undefined => {
  const last = args[args.length - 1]
  return typeof last === 'function' ? (last as () => void) : undefined
}
function ignoredWrite(this: ServerResponse, ...args: unknown[]): boolean {
  const cb = lastCallback(args)
  if (cb !== undefined) process.nextTick(cb)
  return true
}
function ignoredEnd(this: ServerResponse, ...args: unknown[]): ServerResponse {
  const cb = lastCallback(args)
  if (cb !== undefined) process.nextTick(cb)
  return this
}
function ignoredCall(this: ServerResponse): ServerResponse {
  return this
}
const SILENCED = {
  setHeader: ignoredCall,
  setHeaders: ignoredCall,
  appendHeader: ignoredCall,
  removeHeader: ignoredCall,
  writeHead: ignoredCall,
  flushHeaders: ignoredCall,
  addTrailers: ignoredCall,
  writeContinue: ignoredCall,
  writeProcessing: ignoredCall,
  writeEarlyHints: ignoredCall,
  write: ignoredWrite,
  end: ignoredEnd,
}

/**
 * Answer `rejection` on `res` — the request's own response — while the app
 * holds it (a body outgrowing its limit mid-stream, after admission). Node
 * writes a response in the order of its request, behind earlier pipelined
 * answers, so the rejection reaches the request it belongs to. The app's own
 * later writes on `res` are then ignored (its status too, for the logs and
 * metrics), so nothing races the framework's write. The request itself, whose
 * body will never end (its chunks are dropped), is destroyed with the 413 as
 * its error once the connection has closed: body parsers reject, and handlers
 * awaiting it settle. Where the app has already answered, its answer stands:
 * the connection closes after it (and after the pipelined answers before it);
 * if it is still streaming, the connection is closed at once, the only way
 * left to stop the upload.
 *
 * @example
 * answerInstead(res, bodyTooLarge(limit), state.headers)
 */
export function answerInstead(
  res: ServerResponse,
  rejection: Rejection,
  extraHeaders: ReadonlyArray<readonly [string, string]> = [],
): void {
  if (answeredByAegis(res)) return
  const req = res.req
  if (res.headersSent || res.writableEnded) {
    if (res.socket != null && !res.writableEnded) return void res.socket.destroy()
    // Ended, or waiting behind an earlier pipelined answer (no socket yet): destroying the
    // connection now would lose the answers before it.
    res.once('finish', () => req.socket.destroySoon())
    return
  }
  req.socket.once('close', () => {
    const err = new AegisError(ErrorCodes.BODY_TOO_LARGE, 'request body too large', {
      status: rejection.status,
    })
    req.destroy(err)
  })
  writeRawRejection(res, rejection, extraHeaders)
  silence(res, rejection.status)
}

/**
 * Mark `res` as answered by Aegis and make the app's later calls on it no-ops (its
 * status reads `status`): whatever the app still does with it — from a timer, after
 * its handler failed — cannot throw ERR_HTTP_HEADERS_SENT into the host process.
 *
 * @example
 * writeRawRejection(res, rejection)
 * silence(res, rejection.status)
 */
export function silence(res: ServerResponse, status: number): void {
  ;(res as Answered)[kAnswered] = true
  for (const [name, value] of Object.entries(SILENCED)) shadow(res, name, { writable: true, value })
  shadow(res, 'statusCode', { get: () => status, set: ignoredCall })
}

/** Define `name` on this response object, over the prototype's (or a wrapper's) own. */
function shadow(res: ServerResponse, name: string, descriptor: PropertyDescriptor): void {
  try {
    Object.defineProperty(res, name, { configurable: true, ...descriptor })
  } catch {
    // A wrapper made it non-configurable: its own checks will have to do.
  }
}

/**
 * Answer a rejection on a response nobody has written yet — only for what the
 * pipeline and the gateway decide while they hold the response. If the response
 * has already started, the connection is destroyed: that is the only way left
 * to stop the upload. A response Aegis already answered ({@link answerInstead})
 * is left alone.
 */
export function writeRawRejection(
  res: ServerResponse,
  rejection: Rejection,
  extraHeaders: ReadonlyArray<readonly [string, string]> = [],
): void {
  if (answeredByAegis(res)) return
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
