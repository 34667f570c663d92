/**
 * One request through the gateway: the client's request streamed to the
 * upstream through undici's dispatcher API (no intermediate streams: undici
 * pauses the request body when the upstream socket is full), the answer
 * streamed back with `res.write()`, pausing undici while the client's socket
 * is full. A client that goes away aborts the upstream request.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import { endSocket } from '../node/socket.js'
import { cut } from '../node/response.js'
import type { BodyTap, UpstreamHooks } from '../kernel/engine.js'
import type { ProxyRouteConfig } from './options.js'
import { rawAnswer, setClientResponseHeaders } from './headers.js'

/** How one exchange ended. */
export interface ExchangeOutcome {
  /** The upstream's status, or 0 when none arrived. */
  readonly status: number
  /** The error, when the exchange failed (before or after the response started). */
  readonly error: Error | undefined
  /** Whether the client's response was started (headers sent) from the upstream's answer. */
  readonly responded: boolean
  /** The client went away first. */
  readonly clientAborted: boolean
  /** The answer was held back (not sent to the client) because `hold` asked for a retry. */
  readonly held: boolean
}

/** Decide, on the upstream's response head, to hold it back (and retry) instead of answering with it. */
export type HoldDecision = (status: number, headers: IncomingHttpHeaders) => boolean

class HeldError extends Error {
  override name = 'HeldError'
  constructor() {
    super('response held back for a retry')
  }
}

class TakenOverError extends Error {
  override name = 'TakenOverError'
  constructor() {
    super('an engine answered in place of the upstream')
  }
}

class ClientAbortError extends Error {
  override name = 'ClientAbortError'
  readonly code = 'AEGIS_CLIENT_ABORTED'
  constructor() {
    super('the client closed the connection')
  }
}

type Controller = Dispatcher.DispatchController

/**
 * A route's engine hooks on upstream answers (`onResponse` taps the body, `replace` may
 * answer a 5xx or a 304 in the upstream's place): made once per route, and only when an engine hooks
 * them, so an exchange without one pays a field check per answer.
 */
export interface ResponseTaps {
  readonly route: string
  readonly config: ProxyRouteConfig
  readonly hooks: UpstreamHooks
  /** Log what a hook or a tap threw (once per response: a tap that throws is dropped). */
  failed(err: unknown): void
}

/** The tap an engine wants on an answer about to be forwarded, if any; a hook that throws gives none. */
function openTap(
  taps: ResponseTaps,
  req: IncomingMessage,
  status: number,
  headers: IncomingHttpHeaders,
): BodyTap | undefined {
  try {
    return (
      taps.hooks.onResponse?.(req, { route: taps.route, config: taps.config, status, headers }) ?? undefined
    )
  } catch (err) {
    taps.failed(err)
    return undefined
  }
}

// A module function given the exchange as its argument: no closure made per exchange.
const sendTimedOut = (exchange: Exchange): void => exchange.timedOut()

/**
 * The dispatch handler of one exchange. Writes the upstream's answer to `res`;
 * on a failure before the answer started, calls `fail` to answer the client
 * (or try another host) instead.
 */
class Exchange implements Dispatcher.DispatchHandler {
  private controller: Controller | undefined
  private status = 0
  private responded = false
  private finished = false
  private clientGone = false
  private held = false
  private draining = false
  /** The client's socket is full and has not drained since (nginx's `send_timeout` runs). */
  private stalled = false
  private sendTimer: NodeJS.Timeout | undefined = undefined
  /** The body tap of this answer, while it takes chunks (see `ResponseTaps`). */
  private tap: BodyTap | undefined = undefined
  /**
   * A 5xx an engine was asked to answer in the upstream's place, while it decides: the
   * chunks that arrived meanwhile, and how the upstream's answer ended if it did.
   */
  private pending: { chunks: Buffer[]; ended?: IncomingHttpHeaders; error?: Error } | undefined = undefined
  private readonly onClose = (): void => {
    if (this.finished) return
    this.clientGone = true
    this.controller?.abort(new ClientAbortError())
  }
  // Made with the exchange, not when the client's socket first fills: made there (a field going
  // from undefined to a function), 100 KiB answers measured 30–50% more proxy CPU.
  private readonly onDrain = (): void => {
    this.stalled = false
    this.controller?.resume()
  }

  constructor(
    private readonly res: ServerResponse,
    private readonly requestId: { name: string; value: string } | undefined,
    private readonly hold: HoldDecision | undefined,
    private readonly sendTimeout: number,
    private readonly done: (outcome: ExchangeOutcome) => void,
    private readonly req: IncomingMessage | undefined,
    private readonly taps: ResponseTaps | undefined,
  ) {
    res.on('close', this.onClose)
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    if (this.clientGone || this.res.destroyed) controller.abort(new ClientAbortError())
  }

  onResponseStart(controller: Controller, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return // 1xx: Node answers the client's `Expect` itself
    this.status = statusCode
    if (this.hold?.(statusCode, headers) === true) {
      this.held = true
      controller.abort(new HeldError())
      return
    }
    // An upstream 5xx or 304 an engine may answer in its place (the ghost cache): asked before anything is written.
    if ((statusCode >= 500 || statusCode === 304) && this.taps?.hooks.replace !== undefined) {
      const taken = this.askReplace(statusCode, headers)
      if (taken === true) return this.takenOver(controller)
      if (taken !== false) {
        // Nothing more is read from the upstream until the engine has decided.
        this.pending = { chunks: [] }
        controller.pause()
        taken.then(
          (yes) => this.decided(controller, yes === true, statusCode, headers),
          (err: unknown) => {
            ;(this.taps as ResponseTaps).failed(err)
            this.decided(controller, false, statusCode, headers)
          },
        )
        return
      }
    }
    this.start(controller, statusCode, headers)
  }

  /** Ask the engines to answer the upstream's `status` themselves; a hook that throws says no. */
  private askReplace(status: number, headers: IncomingHttpHeaders): boolean | Promise<boolean> {
    const taps = this.taps as ResponseTaps
    if (this.req === undefined) return false
    try {
      const taken = (taps.hooks.replace as NonNullable<UpstreamHooks['replace']>)(this.req, this.res, {
        route: taps.route,
        config: taps.config,
        status,
        headers,
      })
      return taken === true || taken instanceof Promise ? taken : false
    } catch (err) {
      taps.failed(err)
      return false
    }
  }

  /** An engine answered the client: the upstream's answer is dropped. */
  private takenOver(controller: Controller): void {
    this.responded = true
    const ended = this.pending !== undefined && (this.pending.ended !== undefined || this.pending.error)
    this.pending = undefined
    // An upstream answer already over has nothing left to abort.
    if (ended) this.finish(undefined)
    else controller.abort(new TakenOverError())
  }

  /** The engines decided on a pending 5xx: dropped for theirs, or relayed as it came. */
  private decided(
    controller: Controller,
    taken: boolean,
    status: number,
    headers: IncomingHttpHeaders,
  ): void {
    const pending = this.pending
    if (this.finished || pending === undefined) return
    if (taken) return this.takenOver(controller)
    this.pending = undefined
    // Cut before it could be relayed: the route answers 502 (its engines asked once more).
    if (pending.error !== undefined) return this.finish(pending.error)
    if (!this.start(controller, status, headers)) {
      if (pending.ended !== undefined) this.finish(new Error('the upstream answer could not be relayed'))
      return
    }
    for (const chunk of pending.chunks) this.onResponseData(controller, chunk)
    if (pending.ended !== undefined) this.onResponseEnd(controller, pending.ended)
    else controller.resume()
  }

  /** Write the upstream's head to the client; `false` when Node refused a field (the exchange is aborted). */
  private start(controller: Controller, statusCode: number, headers: IncomingHttpHeaders): boolean {
    const res = this.res
    const bodiless = statusCode === 204 || statusCode === 304
    // Opened before the head is written: an engine's tap learns that the gateway, not the app, answers.
    // Held answers never get here: only what the client is sent is tapped.
    if (this.taps !== undefined && this.req !== undefined)
      this.tap = openTap(this.taps, this.req, statusCode, headers)
    try {
      setClientResponseHeaders(res, headers, this.requestId)
      // RFC 9110 §8.6: never a Content-Length on a 204; a 304 may carry the one its 200 would have.
      if (statusCode === 204) res.removeHeader('content-length')
      // The standard reason phrase, not the upstream's: it is free text a client may display.
      res.writeHead(statusCode)
    } catch (err) {
      // A field Node refuses to write: nothing went out yet, so the client gets a 502.
      if (this.tap !== undefined) this.endTap(false)
      controller.abort(err as Error)
      return false
    }
    this.responded = true
    if (res.destroyed) controller.abort(new ClientAbortError())
    else if (bodiless) {
      // A 204 or 304 has no content whatever its Content-Length says (RFC 9110 §6.4.1), so the answer
      // is whole here. undici (to 8.10) still expects the bytes a 304's Content-Length announces and,
      // once the head is parsed, destroys the upstream connection with a content-length mismatch:
      // that error must neither cut the client's answer nor count against a healthy upstream.
      res.end()
      this.finish(undefined)
    }
    return true
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    // undici can hand over an empty slice at a read boundary; written, it would cost a system call.
    if (chunk.length === 0) return
    if (this.pending !== undefined) return void this.pending.chunks.push(chunk)
    if (this.tap !== undefined) this.feed(chunk)
    if (this.res.write(chunk)) return
    controller.pause()
    // Listened for only once the client's socket first fills up (most answers never do).
    if (!this.draining) {
      this.draining = true
      this.res.on('drain', this.onDrain)
    }
    // nginx's send_timeout: from each time the client's socket fills up, it has this long to take
    // something. One timer per exchange, armed again with refresh(); a drain in between disarms it.
    this.stalled = true
    if (this.sendTimer === undefined)
      this.sendTimer = setTimeout(sendTimedOut, this.sendTimeout, this).unref()
    else this.sendTimer.refresh()
  }

  /** Give the tap a chunk; a tap that throws is dropped for the rest of the answer (told it was cut). */
  private feed(chunk: Buffer): void {
    try {
      ;(this.tap as BodyTap).chunk(chunk)
    } catch (err) {
      ;(this.taps as ResponseTaps).failed(err)
      this.endTap(false, true)
    }
  }

  /** End the tap, once: `complete` when the whole body went to a client still there. */
  private endTap(complete: boolean, broken = false): void {
    const tap = this.tap as BodyTap
    this.tap = undefined
    try {
      tap.end(complete)
    } catch (err) {
      // Logged once per answer: a tap that already threw is not reported again.
      if (!broken) (this.taps as ResponseTaps).failed(err)
    }
  }

  /** The send timeout ran out: a client still not reading is cut, which aborts the upstream request. */
  timedOut(): void {
    if (this.stalled && !this.finished) this.res.destroy()
  }

  onResponseEnd(_controller: Controller, trailers: IncomingHttpHeaders): void {
    if (this.finished) return // a 204 or 304, ended with its head
    if (this.pending !== undefined) return void (this.pending.ended = trailers)
    // Trailers (gRPC's status, checksums) go on when the answer is chunked; Node drops them otherwise.
    let any = false
    for (const name in trailers) if (trailers[name] !== undefined) any = true
    if (any) this.res.addTrailers(trailers)
    this.res.end()
    this.finish(undefined)
  }

  onResponseError(_controller: Controller, err: Error): void {
    if (this.finished) return // a 204 or 304 whose Content-Length undici held against the connection
    // Cut while an engine decides: kept for the decision, unless the client left (nothing to decide for).
    if (this.pending !== undefined && !(err instanceof ClientAbortError))
      return void (this.pending.error = err)
    this.pending = undefined
    // Once the answer has started there is no status left to say it with: cut the response.
    if (this.responded && !this.res.writableEnded) cut(this.res, err)
    this.finish(err)
  }

  private finish(error: Error | undefined): void {
    if (this.finished) return
    this.finished = true
    this.res.off('close', this.onClose)
    if (this.draining) this.res.off('drain', this.onDrain)
    if (this.sendTimer !== undefined) clearTimeout(this.sendTimer)
    // Cut (an upstream reset, a timeout, a client gone) unless it ended without an error to a client still there.
    if (this.tap !== undefined) this.endTap(error === undefined && !this.clientGone)
    this.done({
      status: this.status,
      error,
      responded: this.responded,
      clientAborted: this.clientGone || error instanceof ClientAbortError,
      held: this.held,
    })
  }
}

export interface UpstreamRequest {
  readonly dispatcher: Dispatcher
  readonly origin: string
  readonly path: string
  readonly method: Dispatcher.HttpMethod
  readonly headers: string[]
  readonly body: IncomingMessage | Buffer | string | null
  readonly headersTimeout: number
  readonly bodyTimeout: number
  /** Most ms the client may leave the answer unread (its socket full) before it is cut. */
  readonly sendTimeout: number
  readonly requestId: { name: string; value: string } | undefined
  readonly hold?: HoldDecision | undefined
  /** The client's request (what a response tap is told of), and the route's taps if it has any. */
  readonly req?: IncomingMessage | undefined
  readonly taps?: ResponseTaps | undefined
}

/** undici's options for an upstream request. */
const dispatchOptions = (up: UpstreamRequest): Dispatcher.DispatchOptions => ({
  origin: up.origin,
  path: up.path,
  method: up.method,
  headers: up.headers,
  body: up.body,
  headersTimeout: up.headersTimeout,
  bodyTimeout: up.bodyTimeout,
  // The client decides whether a request may be replayed, not undici.
  idempotent: false,
})

/** Send one request upstream and stream the answer to `res`; resolves when the exchange is over. */
export function exchange(res: ServerResponse, up: UpstreamRequest): Promise<ExchangeOutcome> {
  return new Promise((resolve) => {
    const handler = new Exchange(res, up.requestId, up.hold, up.sendTimeout, resolve, up.req, up.taps)
    try {
      up.dispatcher.dispatch(dispatchOptions(up), handler)
    } catch (err) {
      handler.onResponseError(undefined as never, err as Error)
    }
  })
}

/** Protocol names of an `Upgrade` field value, lower-case, without versions. */
const protocolNames = (field: string): string[] =>
  field.split(',').map((p) => (p.split('/')[0] as string).trim().toLowerCase())

/** Whether a 101's `Upgrade` field names protocols among those `offered`, and at least one. */
function switchedTo(field: string | string[] | undefined, offered: string): boolean {
  if (field === undefined) return false
  const names = protocolNames(Array.isArray(field) ? field.join(',') : field)
  const allowed = protocolNames(offered)
  return names.length > 0 && names.every((n) => n !== '' && allowed.includes(n))
}

/** The longest answer body to a refused upgrade that is relayed (a longer one is a 502). */
const REFUSAL_BODY_LIMIT = 64 * 1024

/**
 * A WebSocket (or any `Upgrade`) request through the gateway: the upstream's
 * 101 and its header fields go to the client's socket, then bytes flow both
 * ways untouched until either side closes. An upstream that answers anything
 * else (401, 404, 503…) has that answer relayed and the socket closed, as
 * nginx does. Resolves with the upstream's status (0: none), whether its
 * answer reached the client (`relayed`), and the error that kept it from it.
 */
export function upgradeExchange(
  client: Duplex,
  head: Buffer,
  up: UpstreamRequest,
  protocol: string,
): Promise<{ status: number; relayed: boolean; error: Error | undefined }> {
  return new Promise((resolve) => {
    let settled = false
    const settle = (status: number, relayed: boolean, error: Error | undefined): void => {
      if (settled) return
      settled = true
      client.off('close', onClientClose)
      resolve({ status, relayed, error })
    }
    let controller: Dispatcher.DispatchController | undefined
    let refusal: { status: number; headers: IncomingHttpHeaders; chunks: Buffer[]; bytes: number } | undefined
    const onClientClose = (): void => {
      controller?.abort(new ClientAbortError())
      settle(0, false, new ClientAbortError())
    }
    client.once('close', onClientClose)
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c
        if (settled || client.destroyed) c.abort(new ClientAbortError())
      },
      onRequestUpgrade(_c, statusCode, headers, upstream) {
        if (settled || client.destroyed) {
          upstream.destroy()
          settle(0, false, new ClientAbortError())
          return
        }
        // RFC 9110 §7.8: a 101 names the protocols switched to, which the request must have offered.
        if (!switchedTo(headers.upgrade, protocol)) {
          upstream.destroy()
          settle(0, false, new Error('the upstream switched to a protocol the request did not offer'))
          return
        }
        let response = `HTTP/1.1 ${statusCode} Switching Protocols\r\n`
        for (const [name, value] of Object.entries(headers))
          for (const v of Array.isArray(value) ? value : [value])
            if (v !== undefined) response += `${name}: ${v}\r\n`
        client.write(`${response}\r\n`)
        if (head.length > 0) upstream.write(head)
        // Either side closing, or failing, ends both.
        const end = (): void => {
          client.destroy()
          upstream.destroy()
        }
        client.on('error', end)
        upstream.on('error', end)
        client.on('close', end)
        upstream.on('close', end)
        upstream.pipe(client)
        client.pipe(upstream)
        settle(statusCode, true, undefined)
      },
      // Not upgraded: an ordinary answer, buffered (bounded) and relayed whole.
      onResponseStart(_c, statusCode, headers) {
        if (statusCode >= 200) refusal = { status: statusCode, headers, chunks: [], bytes: 0 }
      },
      onResponseData(c, chunk) {
        if (refusal === undefined) return
        refusal.bytes += chunk.length
        if (refusal.bytes <= REFUSAL_BODY_LIMIT) refusal.chunks.push(chunk)
        else c.abort(new Error(`the upstream's answer to an upgrade exceeds ${REFUSAL_BODY_LIMIT} bytes`))
      },
      onResponseEnd() {
        if (refusal === undefined || settled || client.destroyed)
          return settle(refusal?.status ?? 0, false, new Error('the upstream did not upgrade'))
        endSocket(
          client,
          rawAnswer(refusal.status, refusal.headers, Buffer.concat(refusal.chunks), up.requestId),
        )
        settle(refusal.status, true, undefined)
      },
      onResponseError(_c, err) {
        settle(refusal?.status ?? 0, false, err)
      },
    }
    try {
      up.dispatcher.dispatch({ ...dispatchOptions(up), body: null, upgrade: protocol }, handler)
    } catch (err) {
      settle(0, false, err as Error)
    }
  })
}
