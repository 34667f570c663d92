import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { fn, headerName, method, optInSection } from '../kernel/option-helpers.js'

/** Decides whether an origin may read the response. */
export type OriginFunction = (origin: string, req: IncomingMessage) => boolean

// An origin is scheme://host[:port], nothing more (RFC 6454 §6.1).
const originString = z
  .string()
  .regex(/^https?:\/\/[^/?#@\s]+$/i, 'expected an origin such as https://app.example.com (no path)')
  .transform((o) => o.toLowerCase())

const origin = z.union([
  z.literal('*'),
  originString,
  z.instanceof(RegExp),
  z.array(z.union([originString, z.instanceof(RegExp)])).min(1),
  fn<OriginFunction>('(origin, req) => boolean'),
])

/** CORS, off by default; the same behaviour on all three frameworks. */
export const corsSchema = z
  .strictObject({
    /** Allowed origins: `'*'`, one origin, a RegExp, a list of them, or a function. */
    origin,
    /** Send `Access-Control-Allow-Credentials: true` (never with `'*'`). */
    credentials: z.boolean().default(false),
    /** Methods a preflight may ask for. */
    methods: z.array(method).min(1).default(['GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE']),
    /** Request headers allowed; unset reflects what the preflight asks for. */
    allowedHeaders: z.array(headerName).optional(),
    /** Response headers the browser may expose to scripts. */
    exposedHeaders: z.array(headerName).default([]),
    /** How long (seconds) a browser may cache a preflight. */
    maxAge: z.int().min(0).max(86_400).default(600),
  })
  .refine((c) => !(c.credentials && c.origin === '*'), {
    message: "origin '*' cannot be combined with credentials: list the trusted origins",
    path: ['origin'],
  })

export const corsSection = optInSection(corsSchema)
export type CorsOptions = z.input<typeof corsSchema>
export type CorsConfig = z.output<typeof corsSchema>
