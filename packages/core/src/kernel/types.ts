import type { IncomingMessage, ServerResponse } from 'node:http'

/** Response header fields as name/value pairs, in the order they are written. */
export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>

/**
 * A rejection: what to answer instead of calling the app. Plain data — the
 * adapters write it the framework's way.
 */
export interface Rejection {
  /** HTTP status code. */
  readonly status: number
  /** Short reason, also the `reason` label of the rejection counter. */
  readonly reason: string
  /** Header fields of the answer (Content-Type included). */
  readonly headers: Readonly<Record<string, string>>
  /** The serialised body (application/problem+json, RFC 9457). */
  readonly body: string
}

/** Who the client is, as Aegis derived it (never from the framework's `req.ip`). */
export interface ClientIdentity {
  /** The client address, normalised (IPv4-mapped IPv6 as IPv4). */
  readonly ip: string
  /** The key engines count by: the address, or its IPv6 prefix (/64 by default). */
  readonly key: string
}

/**
 * Per-request state, visible to handlers as Express `req.aegis`, Fastify
 * `request.aegis`, Koa `ctx.state.aegis`.
 */
export interface AegisRequestState {
  readonly client: ClientIdentity
  /** Response headers Aegis wants on the answer (security headers, CORS, rate-limit fields). */
  readonly headers: HeaderList
  /** Set when Aegis answers in place of the app. */
  readonly rejection: Rejection | undefined
  /** True when `skip(req)` took this request out of the guards (headers and metrics still apply). */
  readonly skipped: boolean
  /** `performance.now()` at admission (milliseconds, monotonic). */
  readonly startedAt: number
  /** Route template, once known (the framework's matched route, or a learned template). */
  route: string | undefined
  /** Body size limit in force for this request, in bytes. */
  bodyLimit: number
  /** Values parsed by `shield.validate()` for this route (only the parts it had schemas for). */
  input: ValidatedInput | undefined
}

/** Values a per-route `shield.validate()` parsed. */
export interface ValidatedInput {
  query?: unknown
  params?: unknown
  body?: unknown
}

/** Where the pipeline finds the route template of a finished request. */
export type RouteOf = (req: IncomingMessage) => string | undefined

/** The state as the pipeline and the engines hold it (every field set at admission: one V8 layout). */
export interface AdmittedState extends AegisRequestState {
  headers: HeaderList
  rejection: Rejection | undefined
  /** The request holds a concurrency slot, given back when it is observed. */
  slot: boolean
  /**
   * The request's own response, once tracked: where a late rejection (413) goes. Not kept
   * where states live beside requests (`AdapterHooks.responseOf` finds it there).
   */
  res: ServerResponse | undefined
  /**
   * The configuration generation that admitted the request (pipeline/admission.ts `Live`):
   * the engines that admitted it observe it, and release there what it holds, across a reload.
   */
  owner: unknown
}
