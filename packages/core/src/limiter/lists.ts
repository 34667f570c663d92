/**
 * Who the limiter leaves alone and who it refuses outright: exempt paths
 * (matched exactly on the raw path, or as a `/prefix/*`: a loose match here
 * would be a bypass) and the allow / deny address lists (CIDR ranges, decided
 * once per address and remembered in a bounded cache).
 */
import { LRUCache } from 'lru-cache'
import { inRanges, parseAddress, parseRanges } from '../client/index.js'
import { pathOf } from '../kernel/url.js'

/** `isExempt(url)` for these exemption specs (`/health`, `/static/*`). */
export function createExemptions(specs: readonly string[]): (url: string) => boolean {
  const exact = new Set<string>()
  const prefixes: string[] = []
  for (const spec of specs) {
    if (spec.endsWith('/*')) prefixes.push(spec.slice(0, -1))
    else exact.add(spec)
  }
  return (url) => {
    const path = pathOf(url)
    if (exact.has(path)) return true
    for (const p of prefixes) if (path.startsWith(p)) return true
    return false
  }
}

/** What the lists say of an address: 0 neither, 1 allowed, 2 denied. */
export type Listing = 0 | 1 | 2

/** The allow / deny lists, or `undefined` when both are empty (nothing to look up). */
export function createListing(
  allow: readonly string[],
  deny: readonly string[],
): ((ip: string) => Listing) | undefined {
  const allowRanges = parseRanges(allow)
  const denyRanges = parseRanges(deny)
  if (allowRanges.length + denyRanges.length === 0) return undefined
  const listed = new LRUCache<string, Listing>({ max: 10_000 })
  return (ip) => {
    let v = listed.get(ip)
    if (v === undefined) {
      const addr = parseAddress(ip)
      v = addr === undefined ? 0 : inRanges(addr, denyRanges) ? 2 : inRanges(addr, allowRanges) ? 1 : 0
      listed.set(ip, v)
    }
    return v
  }
}
