import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import type { HeaderList } from '../kernel/types.js'

type HeaderStore = Record<string, [string, string | string[]]>

/**
 * Node keeps a response's headers in an object under an internal symbol
 * (`kOutHeaders`), as `lowercase name → [name, value]`. `setHeader()` re-validates
 * name and value with two regular expressions on every call — about 0.5 µs per
 * header on the machines we measure, 3.5 µs for the seven security headers, the
 * largest single cost of `aegis()`. Our names and values are validated once, at
 * startup, by the options schema; so when this Node's `setHeader()` is seen (by a
 * probe, below) to store exactly that shape, fixed headers are written into the
 * store directly. Anything else — a Node that stores headers differently — falls
 * back to `setHeader()`. The few per-request values (a CORS origin reflected from
 * the request, Server-Timing) are request header values llhttp's strict parser
 * already limited to field-content (no CR, LF or NUL), or our own formatting.
 */
const kOutHeaders: symbol | undefined = (() => {
  const res = new ServerResponse(new IncomingMessage(new Socket()))
  res.setHeader('X-Aegis-Probe', 'v')
  for (const sym of Object.getOwnPropertySymbols(res)) {
    const store = (res as unknown as Record<symbol, unknown>)[sym]
    const entry = (store as HeaderStore | null | undefined)?.['x-aegis-probe']
    if (
      Array.isArray(entry) &&
      entry[0] === 'X-Aegis-Probe' &&
      entry[1] === 'v' &&
      res.getHeader('x-aegis-probe') === 'v'
    )
      return sym
  }
  return undefined
})()

/**
 * A writer for pre-validated headers (lower-case names), which also removes one
 * header the framework set (Express' `X-Powered-By`).
 *
 * @example
 * const write = createHeaderWriter('x-powered-by')
 * write(res, [['x-frame-options', 'DENY']])
 */
export function createHeaderWriter(
  remove: string | undefined,
): (res: ServerResponse, headers: HeaderList) => void {
  if (kOutHeaders === undefined) {
    return (res, headers) => {
      if (remove !== undefined) res.removeHeader(remove)
      for (const [name, value] of headers) res.setHeader(name, value)
    }
  }
  const key = kOutHeaders
  return (res, headers) => {
    const store = storeOf(res, key, remove)
    // A fresh pair per header: Node mutates the pair when a header is appended to.
    // Indexed reads: array destructuring here allocated an iterator per header.
    for (let i = 0; i < headers.length; i++) {
      const header = headers[i] as HeaderList[number]
      store[header[0]] = [header[0], header[1]]
    }
  }
}

/**
 * Node keeps headers in a `{ __proto__: null }` object: a V8 dictionary, which
 * grows by rehashing as fields are added (about 1.5 KB of garbage for a dozen
 * fields). Our store's prototype is an empty object without a prototype: it
 * answers the same for every field name (no `constructor`, no `__proto__`
 * accessor, `for…in` sees own fields only) but keeps fast properties, whose
 * layout V8 caches once. Fields already set move over, less `remove`.
 */
const fastStorePrototype = Object.create(null) as object
function storeOf(res: ServerResponse, key: symbol, remove?: string): HeaderStore {
  const target = res as unknown as Record<symbol, HeaderStore | null | undefined>
  const old = target[key]
  if (old != null && Object.getPrototypeOf(old) === fastStorePrototype) {
    if (remove !== undefined && old[remove] !== undefined) delete old[remove]
    return old
  }
  const store = Object.create(fastStorePrototype) as HeaderStore
  if (old != null) for (const name in old) if (name !== remove) store[name] = old[name] as HeaderStore[string]
  target[key] = store
  return store
}

/**
 * Set header fields another strict HTTP parser already validated — an upstream's
 * answer as undici's llhttp parsed it (token names, lower-cased; values without
 * CR, LF, NUL or other controls) — or that we made (a request id checked against
 * `[\x21-\x7e]`, a UUID), replacing fields of the same name already set.
 * A list value (`Set-Cookie`) stays a list, one field line per value. `skip(name)`
 * leaves a field out; `extra` (lower-case name) is set after them.
 */
export function setParsedHeaders(
  res: ServerResponse,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  skip: (name: string) => boolean,
  extra?: { readonly name: string; readonly value: string },
): void {
  if (kOutHeaders === undefined) {
    for (const name in headers) {
      const value = headers[name]
      if (value !== undefined && !skip(name)) res.setHeader(name, value)
    }
    if (extra !== undefined) res.setHeader(extra.name, extra.value)
    return
  }
  const store = storeOf(res, kOutHeaders)
  for (const name in headers) {
    const value = headers[name]
    if (value !== undefined && !skip(name)) store[name] = [name, value]
  }
  if (extra !== undefined) store[extra.name] = [extra.name, extra.value]
}
