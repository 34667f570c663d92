/**
 * Request bodies through the gateway: the client's stream as it arrives, or —
 * when an app's body parser read it first — its parsed value serialised again.
 */
import type { IncomingMessage } from 'node:http'

/** A parsed body an app's body parser left on the request (`req.body`, `ctx.request.body`). */
export type ParsedBody = unknown

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i
const FORM_TYPE = /^application\/x-www-form-urlencoded\b/i

/**
 * A body a parser already read, serialised again the way it came: bytes and
 * text as they are, JSON as JSON, flat forms as forms. `undefined` when it
 * cannot be (nothing parsed, or a shape its content type cannot carry).
 */
export function reserialize(parsed: ParsedBody, contentType: string | undefined): Buffer | undefined {
  if (Buffer.isBuffer(parsed)) return parsed
  if (parsed instanceof Uint8Array) return Buffer.from(parsed.buffer, parsed.byteOffset, parsed.byteLength)
  if (typeof parsed === 'string') return Buffer.from(parsed)
  if (typeof parsed !== 'object' || parsed === null) return undefined
  const type = contentType ?? ''
  if (JSON_TYPE.test(type)) return Buffer.from(JSON.stringify(parsed))
  if (FORM_TYPE.test(type)) {
    const form = new URLSearchParams()
    for (const [k, v] of Object.entries(parsed)) {
      if (typeof v === 'string') form.append(k, v)
      else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) for (const x of v) form.append(k, x)
      else return undefined
    }
    return Buffer.from(form.toString())
  }
  return undefined
}

export interface Body {
  readonly body: IncomingMessage | Buffer | null
  readonly contentLength: number | undefined
  /** A parser's value serialised again. */
  readonly reserialized?: boolean
}

/** What to send upstream as the body: the request stream, a re-serialised parsed body, or nothing. */
export function bodyOf(req: IncomingMessage, parsed: ParsedBody): Body | undefined {
  const cl = req.headers['content-length']
  const chunked = req.headers['transfer-encoding'] !== undefined
  if (!chunked && (cl === undefined || cl === '0'))
    return { body: null, contentLength: cl === '0' ? 0 : undefined }
  if (!req.readableDidRead && !req.readableEnded)
    return { body: req, contentLength: chunked ? undefined : Number(cl) }
  const again = reserialize(parsed, req.headers['content-type'])
  return again === undefined ? undefined : { body: again, contentLength: again.length, reserialized: true }
}

/** Read a small request body into memory (so a retry can send it again). */
export async function buffered(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}
