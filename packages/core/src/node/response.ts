/**
 * Answers written on a response the app may still hold: taken over (`answerInstead`,
 * the app's later writes silenced) or written raw. Why a trick: without silencing, the
 * app's own late `res.send()` throws ERR_HTTP_HEADERS_SENT, which crashes a host whose
 * handler answers from a timer (test/conformance/robustness.test.ts replays it).
 */
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { AegisError, ErrorCodes } from '../kernel/errors.js'
import type { Rejection } from '../kernel/types.js'

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

/**
 * Undo {@link silence} for a moment: the ghost cache, which learned the answer the app
 * failed to give, writes it where Aegis had written its 500 — then silences the
 * response again, all in one synchronous step the app cannot come between.
 *
 * @example
 * unsilence(res); writeAnswer(res); silence(res, 200)
 */
export function unsilence(res: ServerResponse): void {
  for (const name of [...Object.keys(SILENCED), 'statusCode'])
    delete (res as unknown as Record<string, unknown>)[name]
  delete (res as Answered)[kAnswered]
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
    if (!res.writableEnded) cut(res)
    else res.socket?.destroy()
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

/**
 * Close the connection of a response whose answer cannot be finished (started, then its
 * writer failed): at once when it is on the wire, else when its turn on the connection
 * comes (queued behind pipelined answers). Node 20's `res.destroy()` waited for that turn
 * itself; Node 24's only marks a socketless response destroyed, and the connection would
 * then hang behind the unfinished answer.
 *
 * @example
 * if (res.headersSent) cut(res)
 */
export function cut(res: ServerResponse, err?: Error): void {
  if (res.socket != null) return void res.destroy(err)
  // 'socket' is emitted when the connection reaches this response, before it writes anything.
  res.once('socket', (socket: Socket) => socket.destroy())
}
