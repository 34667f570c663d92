/**
 * The one interface every engine implements. The pipeline (`pipeline/engines.ts`)
 * builds the engines from one ordered table and composes them; it knows none of them
 * by name. Shaped after whatwg-node's server plugins (`onRequest`/`onResponse`
 * hooks with an early answer) and http-proxy-middleware's plugins (engines hook the
 * proxy's events instead of the proxy knowing them).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { AegisRequestState, HeaderList, Rejection } from './types.js'

/**
 * What an engine's `admit` says of a request. Engines return objects they built
 * once (a preflight answer, a header list) wherever they can: nothing is allocated
 * per request on the fast path, where `admit` returns `undefined`.
 */
export interface Verdict {
  /** Fields for the response, after those of the engines before. */
  readonly headers?: HeaderList | undefined
  /** Answer this instead of calling the app; the engines after are not asked. */
  readonly rejection?: Rejection | undefined
}

/** What an engine's `admit` returns: pass (`undefined`), reject, or add fields. */
export type Admission = Rejection | Verdict | undefined

/** Why an engine's `observe` runs: how the response ended. */
export interface Observation {
  /** The status sent, or 499 when the client left before the response finished. */
  readonly status: number
  /** Milliseconds since admission. */
  readonly ms: number
}

/** A path core serves before the app (metrics today; admin and dashboard next). */
export interface Endpoint {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** The exact path (no query); matched before any gateway route or the app. */
  readonly path: string
  /** Take every path under `path` too (`/_aegis/v1/status` for `/_aegis`): the admin API mounted on an app. */
  readonly prefix?: boolean
  /** Write the whole answer on `res`. Must not throw; a returned promise must not reject. */
  handle(req: IncomingMessage, res: ServerResponse): void | Promise<void>
}

/** A proxy route's parsed options as the kernel passes them on: the same object for every request of the route. */
export type RouteOptions = Readonly<Record<string, unknown>>

/**
 * An upstream failure the gateway is about to answer: 502 (no usable answer), 503 (no
 * upstream could take it: none healthy, every breaker open, no connection in time, retry
 * budget spent) or 504 (the upstream did not answer in time).
 */
export interface UpstreamFailure {
  /** The proxy route's name (its `name`, or its prefix). */
  readonly route: string
  /** The route's options, as parsed (`ProxyRouteConfig`): an engine reads its own section there (`ghost`). */
  readonly config: RouteOptions
  readonly status: 502 | 503 | 504
  /** What the gateway answers if no engine takes over. */
  readonly rejection: Rejection
  /** The error behind it, when there was one (a connection refused, a reset, a timeout). */
  readonly error?: unknown
}

/** Receives an upstream answer's body as the gateway forwards it. Must not throw. */
export interface BodyTap {
  /** One chunk, as written to the client (the tap must not keep a reference it then mutates). */
  chunk(data: Buffer): void
  /** The body is over: `complete` false when it was cut (upstream reset, client gone, timeout). */
  end(complete: boolean): void
}

/** An upstream answer about to be forwarded, as `onResponse` sees it. */
export interface UpstreamResponse {
  readonly route: string
  /** The route's options, as parsed (`ProxyRouteConfig`). */
  readonly config: RouteOptions
  /** The upstream's status. */
  readonly status: number
  /** The upstream's header fields, as received (hop-by-hop ones included). */
  readonly headers: IncomingHttpHeaders
}

/** A request a proxy route is about to forward, as `onRequest` sees it. */
export interface UpstreamRequestInfo {
  readonly route: string
  /** The route's options, as parsed (`ProxyRouteConfig`). */
  readonly config: RouteOptions
}

/** How an engine hooks the gateway: the ghost cache serves in `onFailure` and learns in `onResponse`. */
export interface UpstreamHooks {
  /**
   * Answer a request before it is forwarded (a shared cache's fresh hit): `true` (or a
   * promise of it) when the engine answered on `res` itself. Asked in table order until
   * one answers; a hook that throws or rejects counts as not answered.
   */
  onRequest?: (
    req: IncomingMessage,
    res: ServerResponse,
    request: UpstreamRequestInfo,
  ) => boolean | Promise<boolean>
  /**
   * Take over a failure before the gateway answers it: `true` (or a promise of it) when
   * the engine answered on `res` itself. Asked in table order until one answers; a hook
   * that throws or rejects counts as not answered.
   */
  onFailure?: (
    req: IncomingMessage,
    res: ServerResponse,
    failure: UpstreamFailure,
  ) => boolean | Promise<boolean>
  /**
   * An upstream's 5xx, or its 304, is about to be relayed: an engine may answer in its
   * place (the ghost cache's stale-if-error; the full answer to a revalidation it asked
   * for). `true` (or a promise of it) when it answered on `res` itself; the upstream's
   * answer is dropped then, and relayed whole otherwise (nothing is written, and the
   * upstream paused, while a promise is pending). Asked in table order until one answers.
   */
  replace?: (
    req: IncomingMessage,
    res: ServerResponse,
    response: UpstreamResponse,
  ) => boolean | Promise<boolean>
  /** An answer is being forwarded: return a tap to receive its body, or `undefined`. */
  onResponse?: (req: IncomingMessage, response: UpstreamResponse) => BodyTap | undefined
  /**
   * One exchange with an upstream ended (each attempt, retries included): its outcome
   * (`success`, `server-error`, `connect-error`, `timeout`, `error`, `cancelled`) and how
   * long it took, in ms. Every engine's is called; must not throw.
   */
  settled?: (route: string, outcome: string, ms: number) => void
}

/**
 * An engine. Every member is optional: an engine implements the stages it takes part in.
 *
 * @example
 * const engine: Engine = {
 *   name: 'deny-list',
 *   admit: (req) => (blocked.has(req.socket.remoteAddress) ? denied : undefined),
 * }
 */
export interface Engine {
  /** Its name in logs and in the table (`'limiter'`, `'ghost'`). */
  readonly name: string
  /** Fields every answer carries, the app's and Aegis' own (the security headers). */
  readonly headers?: HeaderList
  /** A field removed from every answer Aegis admits (`x-powered-by`), lower-case. */
  readonly drops?: string
  /**
   * The answer to CONNECT, which Node hands to a server's `connect` listeners instead of
   * the app (`null`: the engine allows CONNECT; attached servers then leave it alone).
   */
  readonly connect?: Rejection | null
  /**
   * Run in table order for every request not skipped, until one rejects: `undefined` to
   * let it pass, a `Rejection` to answer it, a `Verdict` to add header fields (and maybe
   * reject). Synchronous, unless a shared store decides (a promise). Never throws: the
   * pipeline answers a throw with a 500 problem, but an engine should know better.
   */
  admit?(req: IncomingMessage, state: AegisRequestState): Admission | Promise<Admission>
  /**
   * An admitted request goes on to the app (not to an endpoint nor a proxy route): the
   * engine may wrap its response (the ghost cache learns the app's answers there and
   * stands in for its failures). Never throws.
   */
  respond?(req: IncomingMessage, res: ServerResponse, state: AegisRequestState): void
  /** After the response ended or was abandoned, for every admitted request. Never throws. */
  observe?(req: IncomingMessage, state: AegisRequestState, seen: Observation): void
  /**
   * Every rejection counted, by its `reason`, whoever answered it (an engine, the gateway, a
   * parser error of the server): what the rejection counter sees. Never throws.
   */
  rejected?(reason: string): void
  /** Paths served before the app. */
  readonly endpoints?: readonly Endpoint[]
  /** Gateway hooks. */
  readonly upstream?: UpstreamHooks
  /**
   * Take an admitted request before the app (the gateway's proxy routes): a promise
   * settled once the response is over, or `false` to pass it on. `url` is the target
   * as seen where Aegis is mounted; `body` what a body parser already read, if any.
   */
  forward?:
    | ((req: IncomingMessage, res: ServerResponse, url: string, body: unknown) => Promise<void> | false)
    | undefined
  /**
   * Whether `forward` would take `url`: asked where the framework routes proxy routes itself
   * (Fastify), so that the app's requests are told from the gateway's.
   */
  claims?(url: string): boolean
  /** Whether an `Upgrade` request (WebSocket) for `url` is this engine's: it is admitted, then `upgrade` runs. */
  ownsUpgrade?(url: string): boolean
  /**
   * Take an admitted `Upgrade` request the engine owns: a promise settled once it is
   * proxied or refused, with the status the client was answered (what `observe` sees;
   * 101 when it resolves with none). `false`: it is no longer its own.
   */
  upgrade?(req: IncomingMessage, socket: Duplex, head: Buffer, url: string): Promise<number | void> | false
  /** Whether `ownsUpgrade` may say yes now: attached servers listen for upgrades only then. */
  readonly upgrades?: boolean
  /** End what a server's drain cannot (upgraded sockets) once `closeTimeout` has run out. */
  endConnections?(): void
  /** Release timers, connections and listeners; called in reverse table order. */
  close?(): void | Promise<void>
}
