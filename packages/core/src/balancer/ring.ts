/**
 * Consistent hashing on a ring of virtual nodes (Karger et al.; Envoy's
 * ring_hash): each host owns `VNODES × weight` points, a key goes to the first
 * point at or after its hash, and an unavailable host's keys move to the next
 * host on the ring while everyone else's stay where they were.
 */
import { hash32 } from '../kernel/hash.js'

const VNODES = 160

export class HashRing<H extends { readonly id: string; readonly weight: number }> {
  private readonly points: Uint32Array
  private readonly owners: H[]
  private readonly hostCount: number

  constructor(hosts: readonly H[]) {
    this.hostCount = hosts.length
    const entries: [number, H][] = []
    for (const h of hosts)
      for (let i = 0; i < VNODES * h.weight; i++) entries.push([hash32(`${h.id}#${i}`), h])
    entries.sort((a, b) => a[0] - b[0])
    this.points = Uint32Array.from(entries, (e) => e[0])
    this.owners = entries.map((e) => e[1])
  }

  /** The host owning `key`, skipping hosts `usable` refuses; `undefined` when it refuses all. */
  pick(key: string, usable: (host: H) => boolean): H | undefined {
    const { points, owners } = this
    const n = points.length
    if (n === 0) return undefined
    const h = hash32(key)
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((points[mid] as number) < h) lo = mid + 1
      else hi = mid
    }
    let tried: Set<H> | undefined
    for (let i = 0; i < n; i++) {
      const owner = owners[(lo + i) % n] as H
      if (tried?.has(owner)) continue
      if (usable(owner)) return owner
      tried ??= new Set()
      tried.add(owner)
      if (tried.size === this.hostCount) break
    }
    return undefined
  }
}
