import { z } from 'zod'

/** A function-valued option; zod 4 has no function schema, so check the type only. */
export const fn = <T extends (...args: never[]) => unknown>(what: string) =>
  z.custom<T>((v) => typeof v === 'function', { message: `expected a function ${what}` })

/** An HTTP method token (RFC 9110 §9.1), upper-cased. */
export const method = z
  .string()
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected an HTTP method token')
  .transform((m) => m.toUpperCase())

/** A header field name (RFC 9110 §5.1). */
export const headerName = z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a header field name')

/** A header field value without control characters. */
export const headerValue = z
  .string()
  .regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'expected a header value without control characters')

/** Make a section switchable with `false`, defaulting to its parsed defaults. */
export const section = <S extends z.ZodType>(schema: S) =>
  z.union([z.literal(false), schema]).prefault({} as never)

/** Same as `section`, but off unless configured. */
export const optInSection = <S extends z.ZodType>(schema: S) =>
  z.union([z.literal(false), schema]).default(false)

/**
 * Freeze parsed data in place, arrays and plain objects all the way down. Class
 * instances are left alone, and so are plain objects with methods: those are the
 * caller's own (a logger given as an object literal, which may keep state of its
 * own), passed through by reference, not data the schema copied.
 */
export function deepFreeze<T>(value: T): T {
  if (Array.isArray(value)) {
    for (const v of value) deepFreeze(v)
    return Object.freeze(value)
  }
  if (
    typeof value === 'object' &&
    value !== null &&
    Object.getPrototypeOf(value) === Object.prototype &&
    !Object.values(value).some((v) => typeof v === 'function')
  ) {
    for (const v of Object.values(value)) deepFreeze(v)
    return Object.freeze(value)
  }
  return value
}

/**
 * The fields that belong to one connection, not to the message (RFC 9110 §7.6.1,
 * and the legacy ones proxies still meet): a proxy never forwards them, in either
 * direction.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'http2-settings',
])

/**
 * Header fields an option may never set: the hop-by-hop ones, and those that frame
 * the message or name its target (RFC 9112 §6–§7, §3.2). Node computes them from
 * what is actually written; a fixed `content-length: 5` on a streamed 21-byte body
 * desynchronises the client, and hop-by-hop fields are the proxy's to decide.
 */
export const FRAMING_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'content-length', 'host'])

/** Whether `name` (any case) is a framing or hop-by-hop field no option may set. */
export const isFramingHeader = (name: string): boolean => FRAMING_HEADERS.has(name.toLowerCase())

/** A header field name that is not a framing or hop-by-hop field. */
export const responseHeaderName = headerName.refine((h) => !isFramingHeader(h), {
  message: `framing and hop-by-hop fields are set by Node from what is written (refused: ${[...FRAMING_HEADERS].join(', ')})`,
})
