/**
 * The app's own answers, as the ghost cache sees them: one wrapper over a response's
 * `writeHead`, `write` and `end` — the place every framework's send path goes through
 * (Express' `res.send` and its final handler, Koa's `respond`, Fastify's `reply.send`
 * and its error handler, a plain listener) — in the way `on-headers` and `compression`
 * wrap them. When the head is written it decides: pass the answer through, pass it
 * through and keep a copy of its body (to learn it), or hold it back (a 5xx the ghost
 * may stand in for) until it is complete, then either answer from the ghost or replay it.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { BodyTap } from '../kernel/engine.js'
import { cut } from '../node/response.js'

/** What to do with an answer, decided on its head. */
export type Decision = 'pass' | 'hold' | BodyTap

/** How the wrapper asks. Neither may throw. */
export interface CaptureHooks {
  /** The app is writing `status` with these fields (what `res` holds and what `writeHead` adds). */
  decide(status: number, headers: OutgoingHttpHeaders): Decision
  /**
   * A held answer is complete: answer on `res` from elsewhere (`true`, or a promise of
   * it), or `false` to have the held answer replayed as the app wrote it.
   */
  standIn(): boolean | Promise<boolean>
}

/** Largest held answer: an error page longer than this is let through as it comes. */
const MAX_HELD = 64 * 1024

type Callback = (err?: Error | null) => void
type Mode = 'undecided' | 'pass' | 'learn' | 'hold'

/**
 * The fields `writeHead(status, [reason], [fields])` is given, in any of Node's shapes, as an
 * object. A name given twice in the array shapes (a relay's `rawHeaders`) keeps every value, as
 * Node writes them all: a `Cache-Control: private` followed by a `Cache-Control: max-age=60` must
 * not read as the second alone.
 */
function headArgs(args: readonly unknown[]): OutgoingHttpHeaders | undefined {
  const fields = typeof args[0] === 'string' ? args[1] : args[0]
  if (fields === undefined || fields === null || typeof fields !== 'object') return undefined
  const out: OutgoingHttpHeaders = {}
  if (Array.isArray(fields)) {
    const add = (name: unknown, value: unknown): void => {
      const lower = String(name).toLowerCase()
      const before = out[lower]
      const values = (Array.isArray(value) ? value : [value]).map(String)
      out[lower] =
        before === undefined
          ? values.length === 1
            ? values[0]
            : values
          : [...(Array.isArray(before) ? before : [String(before)]), ...values]
    }
    // [[name, value], …] or the flat [name, value, name, value, …].
    if (Array.isArray(fields[0])) for (const [name, value] of fields as [string, string][]) add(name, value)
    else for (let i = 0; i + 1 < fields.length; i += 2) add(fields[i], fields[i + 1])
    return out
  }
  for (const name in fields) out[name.toLowerCase()] = (fields as OutgoingHttpHeaders)[name]
  return out
}

/** The bytes of a written chunk. */
const byteLength = (chunk: unknown, encoding: BufferEncoding | undefined): number =>
  typeof chunk === 'string'
    ? Buffer.byteLength(chunk, encoding)
    : ((chunk as Uint8Array | null | undefined)?.length ?? 0)

/**
 * Wrap `res` for the ghost cache (once per request, for the GETs and HEADs that reach
 * the app).
 *
 * @example
 * captureResponse(res, { decide: () => 'pass', standIn: () => false })
 */
export function captureResponse(res: ServerResponse, hooks: CaptureHooks): void {
  // Whatever is there now (Node's, or a wrapper mounted before Aegis), called as Node calls them.
  const { writeHead, write, end } = res as unknown as {
    writeHead: (this: ServerResponse, ...args: unknown[]) => ServerResponse
    write: (this: ServerResponse, ...args: unknown[]) => boolean
    end: (this: ServerResponse, ...args: unknown[]) => ServerResponse
  }
  let mode: Mode = 'undecided'
  let tap: BodyTap | undefined
  // A held answer: its head and its chunks.
  let head: unknown[] = []
  let chunks: [chunk: unknown, encoding: BufferEncoding | undefined][] = []
  let heldBytes = 0

  const feed = (chunk: unknown, encoding: BufferEncoding | undefined): void => {
    if (chunk === undefined || chunk === null || tap === undefined) return
    const t = tap
    try {
      t.chunk(typeof chunk === 'string' ? Buffer.from(chunk, encoding) : Buffer.from(chunk as Uint8Array))
    } catch {
      tap = undefined
      t.end(false)
    }
  }
  const endTap = (complete: boolean): void => {
    const t = tap
    tap = undefined
    t?.end(complete)
  }

  /** Let a held answer go as written (too long to hold, or the ghost had nothing). */
  const release = (): void => {
    mode = 'pass'
    const [h, c] = [head, chunks]
    head = []
    chunks = []
    writeHead.apply(res, h)
    for (const [chunk, encoding] of c) write.call(res, chunk, encoding)
  }

  /**
   * Whether the held answer's `Content-Length` (its head's, else the one set on `res`) says
   * other than the bytes held. It happens when an error handler, told by `headersSent` that
   * nothing went out, wrote its own page (and its length) after the app's first chunks:
   * without the ghost the handler would have found the head sent and closed the connection.
   * Replayed, the surplus would be read as the start of the next answer on the connection.
   */
  const misframed = (): boolean => {
    const req = res.req as { method?: string } | undefined
    const status = typeof head[0] === 'number' ? head[0] : res.statusCode
    if (req?.method === 'HEAD' || status === 204 || status === 304 || status < 200) return false
    const given = headArgs(head.slice(1))?.['content-length'] ?? res.getHeader('content-length')
    if (given === undefined) return false
    let total = 0
    for (const [chunk, encoding] of chunks) total += byteLength(chunk, encoding)
    return Number(Array.isArray(given) ? given[0] : given) !== total
  }

  function decide(this: ServerResponse, ...args: unknown[]): ServerResponse {
    if (mode !== 'undecided') return mode === 'hold' ? res : writeHead.apply(res, args)
    const status = typeof args[0] === 'number' ? args[0] : res.statusCode
    const fields = { ...res.getHeaders(), ...headArgs(args.slice(1)) }
    let decision: Decision
    try {
      decision = hooks.decide(status, fields)
    } catch {
      decision = 'pass'
    }
    if (decision === 'hold') {
      mode = 'hold'
      head = args
      return res
    }
    if (decision !== 'pass') {
      mode = 'learn'
      tap = decision
      res.once('finish', () => endTap(true))
      res.once('close', () => endTap(false))
    } else mode = 'pass'
    return writeHead.apply(res, args)
  }

  const split = (a: unknown, b: unknown): [encoding: BufferEncoding | undefined, cb: Callback | undefined] =>
    typeof a === 'function'
      ? [undefined, a as Callback]
      : [
          typeof a === 'string' ? (a as BufferEncoding) : undefined,
          typeof b === 'function' ? (b as Callback) : undefined,
        ]

  res.writeHead = decide
  res.write = function (this: ServerResponse, chunk: unknown, a?: unknown, b?: unknown): boolean {
    if (mode === 'undecided' && !res.headersSent) decide.call(res, res.statusCode)
    const [encoding, cb] = split(a, b)
    if (mode !== 'hold') {
      if (mode === 'learn') feed(chunk, encoding)
      return write.call(res, chunk, encoding, cb)
    }
    chunks.push([chunk, encoding])
    // Held is taken: an app that waits for its write's callback before it ends must not wait on the hold.
    if (cb !== undefined) process.nextTick(cb)
    heldBytes += byteLength(chunk, encoding)
    if (heldBytes > MAX_HELD) release()
    return true
  } as typeof res.write
  res.end = function (this: ServerResponse, chunk?: unknown, a?: unknown, b?: unknown): ServerResponse {
    if (typeof chunk === 'function')
      return (res.end as (...args: unknown[]) => ServerResponse)(undefined, undefined, chunk)
    if (mode === 'undecided' && !res.headersSent) decide.call(res, res.statusCode)
    const [encoding, cb] = split(a, b)
    if (mode !== 'hold') {
      if (mode === 'learn') feed(chunk, encoding)
      return end.call(res, chunk, encoding, cb)
    }
    if (chunk !== undefined && chunk !== null) chunks.push([chunk, encoding])
    // As Node calls it: once the answer (the ghost's, or the app's replayed) has gone.
    if (cb !== undefined) res.once('finish', () => cb())
    // From here on every write is a plain one: the ghost's answer, or the app's replayed.
    mode = 'pass'
    // The stand-in is written with what was there when Aegis wrapped `res`: a wrapper mounted
    // after it (Express' `compression`) has seen its `end()` already and would drop the ghost's body.
    const own = res as unknown as Record<'writeHead' | 'write' | 'end', unknown>
    const outer = { writeHead: own.writeHead, write: own.write, end: own.end }
    const inner = { writeHead, write, end }
    Object.assign(res, inner)
    const restore = (): void => {
      // Unless something took the response over meanwhile (Aegis' own answer silences it).
      for (const name of ['writeHead', 'write', 'end'] as const)
        if (own[name] === inner[name]) own[name] = outer[name]
    }
    const replay = (): void => {
      restore()
      if (res.destroyed || res.writableEnded) return
      if (res.headersSent) {
        end.call(res)
        return
      }
      if (misframed()) return cut(res)
      mode = 'hold'
      release()
      end.call(res)
    }
    let answered: boolean | Promise<boolean>
    try {
      answered = hooks.standIn()
    } catch {
      answered = false
    }
    if (answered === true) restore()
    else if (answered === false) replay()
    else
      answered.then(
        (yes) => (yes ? restore() : replay()),
        () => replay(),
      )
    return res
  } as typeof res.end
}
