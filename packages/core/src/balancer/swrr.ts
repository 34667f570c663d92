/**
 * Smooth weighted round robin, nginx's (ngx_http_upstream_get_peer): on each
 * pick every candidate's `current` grows by its weight, the largest wins and
 * gives back the sum of the weights. Weights 5:1:1 give a b a c a a a — never
 * five of the heavy host in a row — and over any `sum(weights)` picks each
 * host is chosen exactly its weight's share of the time.
 */
export interface WeightedHost {
  /** Effective weight now (health, slow start may lower it); 0 skips the host. */
  readonly effectiveWeight: number
}

export class SmoothWeightedRoundRobin<H extends WeightedHost> {
  private readonly current: Float64Array

  constructor(private readonly hosts: readonly H[]) {
    this.current = new Float64Array(hosts.length)
  }

  /** The next host among those `eligible` accepts, or `undefined` when none does. */
  pick(eligible: (host: H) => boolean): H | undefined {
    const { hosts, current } = this
    let best = -1
    let total = 0
    for (let i = 0; i < hosts.length; i++) {
      const h = hosts[i] as H
      const w = h.effectiveWeight
      if (w <= 0 || !eligible(h)) continue
      current[i] = (current[i] as number) + w
      total += w
      if (best < 0 || (current[i] as number) > (current[best] as number)) best = i
    }
    if (best < 0) return undefined
    current[best] = (current[best] as number) - total
    return hosts[best]
  }
}
