/** The admin API's events: every change made through it, for the audit trail, the logs and the live feed. */

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** A change made through the admin API (a mutation that succeeded). */
    'admin.action': {
      /** What was done: the method and the route (`POST /v1/anomaly/unblock`). */
      readonly action: string
      /** The token's name. */
      readonly actor: string
      readonly role: 'read' | 'admin'
      /** The peer's address, whole: an operator's action is accounted for, not anonymised. */
      readonly source: string
      readonly requestId: string
      /** What it was done to: the route's parameters and the body's identifying fields. */
      readonly target?: Readonly<Record<string, string>>
      /** Hashes of the configuration before and after (a configuration change). */
      readonly before?: string
      readonly after?: string
      /** What changed, as an RFC 6902 JSON Patch (a configuration change; secrets redacted). */
      readonly diff?: readonly unknown[]
    }
  }
}

export {}
