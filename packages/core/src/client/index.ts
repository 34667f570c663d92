import type { IncomingMessage } from 'node:http'
import ipaddr from 'ipaddr.js'
import { LRUCache } from 'lru-cache'
import type { ClientIdentity } from '../kernel/types.js'

import { strictAddress, strictCidr } from './options.js'

export { trustProxySchema, ipv6SubnetSchema, strictAddress, strictCidr } from './options.js'
export type { TrustProxyOption } from './options.js'

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number]

const NAMED: Record<string, readonly string[]> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
}

/**
 * Parse an address, folding IPv4-mapped IPv6 to IPv4; `undefined` when it is not an address.
 *
 * @example
 * parseAddress('::ffff:192.0.2.1')?.toString() // '192.0.2.1'
 */
export function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const addr = strictAddress(text.trim())
  if (addr === undefined) return undefined
  // Fold IPv4-mapped IPv6 to IPv4 (what `ipaddr.process` does, without parsing again).
  return addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()
    ? (addr as ipaddr.IPv6).toIPv4Address()
    : addr
}

export interface ClientResolver {
  /** The client of this request. Cached per socket address and forwarded chain. */
  resolve(req: IncomingMessage): ClientIdentity
  /** Whether the socket peer of this request is a trusted proxy (its forwarding headers count). */
  peerTrusted(req: IncomingMessage): boolean
}

/**
 * Client identity: the socket address, unless trusted proxies forwarded the
 * request — then the right-most address in `X-Forwarded-For` that is not a
 * trusted proxy (or the hop the count names). The framework's `req.ip` is
 * never read: its trust settings are not ours.
 *
 * @example
 * const clients = createClientResolver({ trustProxy: ['loopback'], ipv6Subnet: 64 })
 * clients.resolve(req).key // '203.0.113.7' or '2001:db8:1:2::/64'
 */
/** Parse IPs and CIDRs (and the named ranges) into ranges `inRanges` can match. */
export function parseRanges(entries: readonly string[]): Range[] {
  const ranges: Range[] = []
  for (const entry of entries) {
    for (const cidr of NAMED[entry] ?? [entry]) {
      // Entries come validated by the options schema, with the same strict parser.
      const range = cidr.includes('/') ? strictCidr(cidr) : parseAddress(cidr)
      if (range === undefined) throw new TypeError(`not an IP address or CIDR: ${cidr}`)
      ranges.push(Array.isArray(range) ? range : [range, range.kind() === 'ipv4' ? 32 : 128])
    }
  }
  return ranges
}

/** Whether an address lies in one of the ranges. */
export const inRanges = (addr: ipaddr.IPv4 | ipaddr.IPv6, ranges: readonly Range[]): boolean =>
  ranges.some(([net, bits]) => net.kind() === addr.kind() && addr.match([net, bits] as never))

export function createClientResolver(options: {
  trustProxy: false | number | readonly string[]
  ipv6Subnet: number
  onUntrustedForwardedFor?: () => void
}): ClientResolver {
  const { trustProxy, ipv6Subnet, onUntrustedForwardedFor } = options
  const ranges = Array.isArray(trustProxy) ? parseRanges(trustProxy as readonly string[]) : []
  const trusted = (addr: ipaddr.IPv4 | ipaddr.IPv6): boolean => inRanges(addr, ranges)

  // Identities are small and few per socket address: cache them (bounded).
  const cache = new LRUCache<string, ClientIdentity>({ max: 10_000 })

  const identity = (addr: ipaddr.IPv4 | ipaddr.IPv6): ClientIdentity => {
    const ip = addr.toString()
    if (addr.kind() === 'ipv4' || ipv6Subnet >= 128) return { ip, key: ip }
    // Mask the parsed parts: re-parsing a CIDR string costs several times more, per new client.
    const parts = (addr as ipaddr.IPv6).parts.slice()
    for (let i = 0; i < 8; i++) {
      const keep = Math.min(16, Math.max(0, ipv6Subnet - i * 16))
      parts[i] = (parts[i] as number) & (keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff)
    }
    return { ip, key: `${new ipaddr.IPv6(parts).toString()}/${ipv6Subnet}` }
  }

  const fromText = (text: string): ClientIdentity => {
    let id = cache.get(text)
    if (id === undefined) {
      const addr = parseAddress(text)
      id = addr === undefined ? { ip: text, key: text } : identity(addr)
      cache.set(text, id)
    }
    return id
  }

  const UNKNOWN: ClientIdentity = Object.freeze({ ip: 'unknown', key: 'unknown' })
  let warned = false

  return {
    resolve(req) {
      const remote = req.socket.remoteAddress
      if (remote === undefined) return UNKNOWN // socket already gone
      const forwarded = req.headers['x-forwarded-for']
      if (trustProxy === false || forwarded === undefined) {
        if (forwarded !== undefined && !warned && onUntrustedForwardedFor) {
          warned = true
          onUntrustedForwardedFor()
        }
        return fromText(remote)
      }
      const socketAddr = parseAddress(remote)
      if (socketAddr === undefined) return fromText(remote)
      // Walk from the nearest hop outwards.
      const chain = String(forwarded).split(',')
      if (typeof trustProxy === 'number') {
        // Hop count: the socket is hop 0, the right-most forwarded entry hop 1, …
        let hops = 0
        let client = socketAddr
        for (let i = chain.length - 1; i >= 0 && hops < trustProxy; i--, hops++) {
          const addr = parseAddress(chain[i] ?? '')
          if (addr === undefined) break
          client = addr
        }
        return fromText(client.toString())
      }
      if (!trusted(socketAddr)) return fromText(remote)
      let client = socketAddr
      for (let i = chain.length - 1; i >= 0; i--) {
        const addr = parseAddress(chain[i] ?? '')
        if (addr === undefined) break // garbage: the last trusted hop is all we know
        client = addr
        if (!trusted(addr)) break
      }
      return fromText(client.toString())
    },
    peerTrusted(req) {
      if (trustProxy === false) return false
      if (typeof trustProxy === 'number') return trustProxy > 0
      const addr = parseAddress(req.socket.remoteAddress ?? '')
      return addr !== undefined && trusted(addr)
    },
  }
}

/**
 * Mask a client address for logs: IPv4 keeps /24, IPv6 keeps /48.
 *
 * @example
 * maskAddress('203.0.113.77') // '203.0.113.0/24'
 */
export function maskAddress(ip: string): string {
  const addr = parseAddress(ip)
  if (addr === undefined) return 'unknown'
  if (addr.kind() === 'ipv4')
    return `${ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/24`).toString()}/24`
  return `${ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/48`).toString()}/48`
}
