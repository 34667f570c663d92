/**
 * Smooth weighted round robin, nginx's (ngx_http_upstream_get_peer): on each
 * pick every candidate's `current` grows by its weight, the largest wins and
 * gives back the sum of the weights. Weights 5:1:1 give a a b a c a a — never
 * five of the heavy host in a row — and over any `sum(weights)` picks each
 * host is chosen exactly its weight's share of the time.
 */
export class SmoothWeightedRoundRobin<H> {
  private readonly current: Float64Array

  constructor(private readonly hosts: readonly H[]) {
    this.current = new Float64Array(hosts.length)
  }

  /** The next host; `weightOf` gives each host's weight now, 0 to skip it. `undefined` when all are 0. */
  pick(weightOf: (host: H) => number): H | undefined {
    const { hosts, current } = this
    let best = -1
    let total = 0
    for (let i = 0; i < hosts.length; i++) {
      const w = weightOf(hosts[i] as H)
      if (w <= 0) continue
      current[i] = (current[i] as number) + w
      total += w
      if (best < 0 || (current[i] as number) > (current[best] as number)) best = i
    }
    if (best < 0) return undefined
    current[best] = (current[best] as number) - total
    return hosts[best]
  }
}
