/**
 * The admin engine's event on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts): one per mutation an operator made, which the audit trail records
 * one by one. Declared here, beside its only reader, so that any engine (the admin API,
 * the config file's reload, an application's own tooling) can emit it.
 */

/** One RFC 6902 JSON Patch operation, as a config diff is written. */
export type JsonPatchOperation =
  | { readonly op: 'add' | 'replace' | 'test'; readonly path: string; readonly value: unknown }
  | { readonly op: 'remove'; readonly path: string }
  | { readonly op: 'move' | 'copy'; readonly from: string; readonly path: string }

/** What an operator did, as `admin.action` carries it. */
export interface AdminAction {
  /**
   * What was done, `<area>.<verb>`: `config.apply`, `config.reload`, `upstream.drain`,
   * `upstream.enable`, `breaker.force`, `limiter.clear`, `anomaly.unblock`, `ghost.purge`, …
   */
  readonly action: string
  /** Who: the name of the token (never the token itself), or `file` / `signal` for a reload. */
  readonly actor: string
  readonly role: 'read' | 'admin' | (string & {})
  /** Where from: the client address of the admin request. */
  readonly source: string
  /** The admin request's id, to join with its access log line. */
  readonly requestId: string
  /** What it acted on: a route, an upstream, a client key, a ghost key. */
  readonly target?: string
  /** Config hashes around the change (`sha256:<hex>`), for a config action. */
  readonly before?: string
  readonly after?: string
  /** The change, RFC 6902 (secrets redacted before they are kept). */
  readonly diff?: readonly JsonPatchOperation[]
  /** `ok` unless said otherwise: a refused or failed mutation is worth recording too. */
  readonly outcome?: 'ok' | 'refused' | 'failed'
  /** Why it was refused or failed. */
  readonly error?: string
}

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** An operator changed something through the admin API, the config file or a signal. */
    'admin.action': AdminAction
  }
}
