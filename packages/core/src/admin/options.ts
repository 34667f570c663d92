import ipaddr from 'ipaddr.js'
import { z } from 'zod'
import { headerName, optInSection } from '../kernel/option-helpers.js'

/** What a token may do: `read` the state, or also change it (`admin`). */
export type AdminRole = 'read' | 'admin'

/** A token: at least 16 characters of anything printable, no blanks (it travels in a header). */
const token = z
  .string()
  .min(16, 'a token needs at least 16 characters (generate one: openssl rand -hex 32)')
  .max(512)
  .regex(/^[\x21-\x7e]+$/, 'a token is printable ASCII without spaces')

/** `host:port`, `[v6]:port` or a port alone (on 127.0.0.1). */
const listenAddress = z.union([
  z.int().min(0).max(65_535),
  z.string().refine((s) => parseListen(s) !== undefined, {
    message: "expected 'host:port', '[::1]:port' or a port",
  }),
])

/**
 * The admin API: off unless given a token. Listens on its own loopback address by default,
 * and may be mounted on the app too.
 *
 * @example
 * adminSchema.parse({ token: process.env.AEGIS_ADMIN_TOKEN })
 */
export const adminSchema = z
  .strictObject({
    /** The token of the `admin` role (read and change), named `admin` in the audit trail. */
    token: token.optional(),
    /** More tokens, each named (the actor in the audit trail) and with its role. */
    tokens: z
      .array(
        z.strictObject({
          name: z
            .string()
            .min(1)
            .max(64)
            .regex(/^[\w.@-]+$/, 'expected letters, digits, _ . @ -'),
          token,
          role: z.enum(['read', 'admin']),
        }),
      )
      .max(64)
      .default([]),
    /**
     * Where its own listener listens: `'127.0.0.1:9901'` by default; `false` for none (the
     * API is then reached only where it is mounted). A non-loopback address is the operator's
     * choice, made with tokens and preferably behind TLS.
     */
    listen: z.union([z.literal(false), listenAddress]).default('127.0.0.1:9901'),
    /** Also serve the API on the app, under this path (`'/_aegis'`), through Aegis' guards. */
    mount: z
      .string()
      .regex(/^\/[\w./-]*[^/]$/, "expected a path such as '/_aegis' (no trailing slash)")
      .optional(),
    /**
     * `Host` values accepted besides the listener's own address, `localhost`, `127.0.0.1` and
     * `[::1]` (a DNS rebinding attack arrives with its own name). Names, without ports. Where
     * the API is mounted, the app's names must be listed here.
     */
    hosts: z
      .array(z.string().regex(/^[\w.-]+$|^\[[\da-fA-F:.]+\]$/, 'expected a host name or [IPv6]'))
      .max(64)
      .default([]),
    /** Origins (`https://ops.example.com`) whose pages may call the API; requests from any other are refused. */
    origins: z
      .array(z.url().refine((u) => new URL(u).origin === u, { message: 'expected an origin, no path' }))
      .max(64)
      .default([]),
    /**
     * The header a mutation must carry (any value): a form or an image cannot send one, and a
     * cross-origin script cannot without a CORS preflight, which the API never answers.
     */
    csrfHeader: headerName.transform((h) => h.toLowerCase()).default('x-aegis-admin'),
    /** Live-feed subscribers at once; more are refused with 503. */
    maxFeedClients: z.int().min(1).max(1000).default(16),
    /** Largest request body (a config to validate or apply), in bytes. */
    maxBodyBytes: z
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
  })
  .superRefine((o, ctx) => {
    if (o.token === undefined && o.tokens.length === 0)
      ctx.addIssue({
        code: 'custom',
        path: ['token'],
        message: 'the admin API needs a token (admin.token, or admin.tokens)',
      })
    const seen = new Set<string>(o.token === undefined ? [] : [o.token])
    o.tokens.forEach((t, i) => {
      if (seen.has(t.token))
        ctx.addIssue({ code: 'custom', path: ['tokens', i, 'token'], message: 'the same token twice' })
      seen.add(t.token)
    })
    if (o.listen === false && o.mount === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['listen'],
        message: 'with listen: false the API needs a mount path on the app (admin.mount)',
      })
  })

export const adminSection = optInSection(adminSchema)
export type AdminOptions = z.input<typeof adminSchema>
export type AdminConfig = z.output<typeof adminSchema>

/** A listener address: host (bare, IPv6 unbracketed) and port. */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

/**
 * `'127.0.0.1:9901'`, `'[::1]:9901'`, `'0.0.0.0:9901'`, `'localhost:9901'` or `9901`.
 *
 * @example
 * parseListen('[::1]:9901') // { host: '::1', port: 9901 }
 */
export function parseListen(value: string | number): ListenAddress | undefined {
  if (typeof value === 'number') return { host: '127.0.0.1', port: value }
  const m = /^(?:\[([\da-fA-F:.]+)\]|([\w.-]+)):(\d{1,5})$/.exec(value)
  if (m === null) return /^\d{1,5}$/.test(value) ? parseListen(Number(value)) : undefined
  const port = Number(m[3])
  if (port > 65_535) return undefined
  const host = (m[1] ?? m[2]) as string
  if (m[1] !== undefined && !ipaddr.IPv6.isValid(host)) return undefined
  return { host, port }
}

/** Whether a listener on `host` is reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true
  if (!ipaddr.isValid(host)) return false
  const addr = ipaddr.process(host)
  return addr.range() === 'loopback'
}
