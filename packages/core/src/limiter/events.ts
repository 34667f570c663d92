/**
 * The limiter's event on the bus (declaration merging on `AegisEvents`, see
 * kernel/events.ts): a request it refused. Emitted only while something listens (the
 * audit trail counts them per minute, client and reason), so a default instance with
 * no listener builds nothing per refusal.
 */
declare module '../kernel/events.js' {
  interface AegisEvents {
    /**
     * A request refused by the limiter: `limited` (over an enforced quota, 429), `banned`
     * (inside a policy's block duration, 429) or `denied` (on the deny list, 403).
     */
    'limiter.blocked': {
      /** The client's key: its address (an IPv6 client's /64), as `aegis.limiter.get()` takes it. */
      readonly client: string
      readonly reason: 'limited' | 'banned' | 'denied'
      /** The enforced policies that refused it (none for `denied`). */
      readonly policies: readonly string[]
      readonly status: number
      /** The request's path, without its query. */
      readonly path: string
    }
  }
}

export {}
