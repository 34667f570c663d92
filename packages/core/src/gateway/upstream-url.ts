/**
 * Which upstream addresses a gateway may talk to.
 *
 * Operator-configured upstreams may be private or loopback — that is what a
 * gateway fronts — but never link-local (169.254.0.0/16, fe80::/10, where
 * cloud metadata services answer) or a known metadata address. WHATWG URL
 * parsing turns the decimal, octal and hex spellings of an IPv4 host
 * (`http://2852039166/`, `http://0251.0376.0251.0376/`, `http://0xa9fea9fe/`)
 * into dotted decimal, and ipaddr.js `process()` reads an IPv4-mapped IPv6
 * address (`[::ffff:a9fe:a9fe]`) as the IPv4 one, so every spelling meets the
 * same check.
 */
import ipaddr from 'ipaddr.js'

/** Metadata services that are not in a link-local range. */
const METADATA_ADDRESSES = new Set([
  '100.100.100.200', // Alibaba Cloud
  '192.0.0.192', // Oracle Cloud (classic)
  'fd00:ec2::254', // AWS IMDS over IPv6
])
export const METADATA_NAMES: ReadonlySet<string> = new Set([
  'metadata.google.internal',
  'metadata.goog',
  'metadata',
  'instance-data',
])

/** `undefined` when `host` (a URL hostname, IPv6 in brackets) is not an IP literal. */
export function hostAddress(host: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  if (!ipaddr.isValid(bare)) return undefined
  return ipaddr.process(bare)
}

/** Why an operator-configured upstream address is refused, or `undefined` when it is fine. */
export function refusedUpstreamAddress(addr: ipaddr.IPv4 | ipaddr.IPv6): string | undefined {
  const range = addr.range()
  if (range === 'linkLocal') return `${addr.toString()} is link-local (cloud metadata lives there)`
  if (range === 'unspecified' || range === 'broadcast' || range === 'multicast')
    return `${addr.toString()} is a ${range} address`
  if (METADATA_ADDRESSES.has(addr.toString())) return `${addr.toString()} is a cloud metadata address`
  return undefined
}

/**
 * Why a run-time target address is refused: anything but global unicast
 * (loopback, private, unique-local, CGNAT, reserved, and the IPv6 ranges that
 * embed an IPv4 address: 6to4, Teredo, NAT64) and the metadata addresses —
 * unless `allowed(addr)` says this address is meant.
 */
export function refusedTargetAddress(
  addr: ipaddr.IPv4 | ipaddr.IPv6,
  allowed: (addr: ipaddr.IPv4 | ipaddr.IPv6) => boolean,
): string | undefined {
  if (allowed(addr)) return undefined
  const operator = refusedUpstreamAddress(addr)
  if (operator !== undefined) return operator
  const range = addr.range()
  return range === 'unicast' ? undefined : `${addr.toString()} is in the ${range} range`
}

/**
 * Parse and check an operator-configured upstream URL: http or https, a host,
 * no credentials, no query or fragment, no link-local or metadata address.
 * Returns the URL or throws an Error whose message names the problem.
 */
export function parseUpstreamUrl(input: string): URL {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    throw new Error('expected an absolute http:// or https:// URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`expected http: or https:, got ${url.protocol}`)
  if (url.username !== '' || url.password !== '')
    throw new Error('credentials in an upstream URL are refused (they end up in logs); use headers')
  if (url.search !== '' || url.hash !== '') throw new Error('an upstream URL takes no query or fragment')
  if (url.hostname === '') throw new Error('expected a host')
  const name = url.hostname.toLowerCase().replace(/\.$/, '')
  if (METADATA_NAMES.has(name)) throw new Error(`${name} is a cloud metadata host`)
  const addr = hostAddress(url.hostname)
  const refused = addr === undefined ? undefined : refusedUpstreamAddress(addr)
  if (refused !== undefined) throw new Error(refused)
  return url
}
