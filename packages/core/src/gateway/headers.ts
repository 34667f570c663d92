/**
 * What crosses the gateway in each direction.
 *
 * Towards the upstream: the client's header fields in their order, minus the
 * hop-by-hop ones (RFC 9110 §7.6.1: `Connection` and every field it names,
 * `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
 * `Upgrade`, `Proxy-Authorization`), minus framing the gateway writes itself
 * (`Host`, `Content-Length`, `Expect`), minus names with `_` (nginx's
 * `underscores_in_headers off`: `Transfer_Encoding` must not reach a server
 * that folds `_` into `-`), plus `X-Forwarded-For/-Proto/-Host` and
 * `Forwarded` (RFC 7239). Forwarding fields from the client are kept and
 * appended to only when the peer is a trusted proxy; from anyone else they
 * are dropped and the chain starts at this hop, since a client can write
 * whatever it likes there.
 *
 * Towards the client: the upstream's fields minus the hop-by-hop ones.
 */
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { setParsedHeaders } from '../node/header-store.js'
import { rawResponse } from '../node/socket.js'
import { HOP_BY_HOP } from '../kernel/option-helpers.js'

/** Request fields the gateway writes itself or never forwards. */
const REQUEST_DROPPED = new Set([
  ...HOP_BY_HOP,
  'host',
  'content-length',
  'expect',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'forwarded',
])

const PLAIN_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i

/** Field names a `Connection` header lists (lower-case); `undefined` when it names none. */
export function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  // The common values name no other field.
  if (value === undefined || (typeof value === 'string' && PLAIN_CONNECTION.test(value))) return undefined
  const tokens = new Set<string>()
  for (const v of Array.isArray(value) ? value : [value])
    for (const t of v.split(',')) {
      const name = t.trim().toLowerCase()
      if (name !== '') tokens.add(name)
    }
  return tokens
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** An RFC 7239 value: a token as is, anything else quoted. */
const forwardedValue = (s: string): string =>
  TOKEN.test(s) ? s : `"${s.includes('"') || s.includes('\\') ? s.replace(/["\\]/g, '\\$&') : s}"`

/** An RFC 7239 node: IPv6 in brackets and quotes. */
const forwardedNode = (ip: string): string => (ip.includes(':') ? `"[${ip}]"` : ip)

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/
const TE_TRAILERS = /(?:^|,)\s*trailers\s*(?:;|,|$)/i

export interface ForwardContext {
  /** The socket peer's address. */
  readonly peer: string
  /** Whether the peer is a trusted proxy (its forwarding fields are kept). */
  readonly peerTrusted: boolean
  /** The `Host` to send. */
  readonly host: string
  /** Keep names containing `_`. */
  readonly underscores: boolean
  /** The request-id field name, or `false`. */
  readonly requestId: string | false
  /** `Content-Length` to send, or `undefined` when the gateway streams (chunked) or sends none. */
  readonly contentLength: number | undefined
  /** The body is a parser's value serialised again (decoded): its `Content-Encoding` no longer applies. */
  readonly reserialized?: boolean
}

/** Client-address fields some servers believe; only a trusted proxy's are passed on. */
const CLIENT_IP_FIELDS = new Set(['x-real-ip', 'true-client-ip', 'x-client-ip', 'cf-connecting-ip'])

/** The upstream request's header fields (flat `[name, value, …]`) and the request id sent. */
export function upstreamRequestHeaders(
  req: IncomingMessage,
  ctx: ForwardContext,
): { headers: string[]; requestId: string | undefined } {
  const raw = req.rawHeaders
  const named = connectionTokens(req.headers.connection)
  const out: string[] = ['host', ctx.host]
  let requestId: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const value = raw[i + 1] as string
    const lower = name.toLowerCase()
    if (REQUEST_DROPPED.has(lower) || named?.has(lower)) continue
    if (!ctx.peerTrusted && CLIENT_IP_FIELDS.has(lower)) continue
    if (ctx.reserialized === true && lower === 'content-encoding') continue
    if (!ctx.underscores && name.includes('_')) continue
    if (lower === ctx.requestId) {
      if (requestId !== undefined || !REQUEST_ID.test(value)) continue
      requestId = value
    }
    out.push(name, value)
  }
  if (ctx.contentLength !== undefined) out.push('content-length', String(ctx.contentLength))
  // `TE: trailers` is the one TE value a proxy passes on (gRPC needs it).
  const te = req.headers.te
  if (te !== undefined && TE_TRAILERS.test(String(te))) out.push('te', 'trailers')

  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true
  const incoming = ctx.peerTrusted ? req.headers : undefined
  const proto = first(incoming?.['x-forwarded-proto']) ?? (encrypted ? 'https' : 'http')
  const clientHost = first(incoming?.['x-forwarded-host']) ?? req.headers.host ?? ''
  const xff = incoming?.['x-forwarded-for']
  out.push('x-forwarded-for', xff === undefined ? ctx.peer : `${joined(xff)}, ${ctx.peer}`)
  out.push('x-forwarded-proto', proto)
  if (clientHost !== '') out.push('x-forwarded-host', clientHost)
  let forwarded = `for=${forwardedNode(ctx.peer)};proto=${encrypted ? 'https' : 'http'}`
  if (req.headers.host !== undefined) forwarded += `;host=${forwardedValue(req.headers.host)}`
  const prior = incoming?.forwarded
  out.push('forwarded', prior === undefined ? forwarded : `${joined(prior)}, ${forwarded}`)
  if (ctx.requestId !== false && requestId === undefined) {
    requestId = randomUUID()
    out.push(ctx.requestId, requestId)
  }
  return { headers: out, requestId }
}

const first = (v: string | string[] | undefined): string | undefined => {
  const s = Array.isArray(v) ? v[0] : v
  if (s === undefined) return undefined
  const comma = s.indexOf(',')
  const t = (comma < 0 ? s : s.slice(0, comma)).trim()
  return t === '' ? undefined : t
}

const joined = (v: string | string[]): string => (Array.isArray(v) ? v.join(', ') : v)

/**
 * Set the upstream response's fields on the client's response, without the
 * hop-by-hop ones, plus `extra` (the request id) unless the upstream set it.
 */
export function setClientResponseHeaders(
  res: ServerResponse,
  headers: IncomingHttpHeaders,
  extra: { name: string; value: string } | undefined,
): void {
  const added = extra === undefined || headers[extra.name] !== undefined ? undefined : extra
  setParsedHeaders(res, headers, hopByHop(headers), added)
}

/** Whether a response field is hop-by-hop: always, or because its `Connection` names it. */
function hopByHop(headers: IncomingHttpHeaders): (name: string) => boolean {
  const named = connectionTokens(headers.connection)
  return (name) => HOP_BY_HOP.has(name) || named?.has(name) === true
}

/**
 * A complete HTTP/1.1 answer for a raw socket, from an upstream's status,
 * fields and (buffered) body: the upstream's fields without the hop-by-hop
 * ones and without its framing, `extra` (the request id) unless the upstream
 * set it, then `Connection: close` and the body's length. For an upgrade the
 * upstream refused, whose socket never reaches Node's HTTP response machinery.
 */
export function rawAnswer(
  status: number,
  headers: IncomingHttpHeaders,
  body: Buffer,
  extra: { name: string; value: string } | undefined,
): Buffer {
  const skip = hopByHop(headers)
  let fields = ''
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || skip(name) || name === 'content-length') continue
    for (const v of Array.isArray(value) ? value : [value]) fields += `${name}: ${v}\r\n`
  }
  if (extra !== undefined && headers[extra.name] === undefined) fields += `${extra.name}: ${extra.value}\r\n`
  return rawResponse(status, fields, body)
}
