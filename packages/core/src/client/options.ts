import { z } from 'zod'
import ipaddr from 'ipaddr.js'

const NAMED_RANGES = ['loopback', 'linklocal', 'uniquelocal'] as const

/**
 * The one address parser of Aegis, for options and for what arrives on the wire
 * alike. IPv4 only in the canonical dotted-decimal four-part form: `inet_aton`'s
 * octal (`010.0.0.1` = 8.0.0.1), hex (`0x7f.1`) and shorthand (`127.1`) forms
 * read differently in different stacks — an allow list, `trustProxy` or the
 * X-Forwarded-For parser must never disagree on which host a string names.
 * IPv6 as RFC 4291 §2.2 writes it, an embedded IPv4 tail held to the same rule.
 *
 * @example
 * strictAddress('10.0.0.1')?.toString() // '10.0.0.1'
 * strictAddress('010.0.0.1') // undefined
 */
export function strictAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text)
    if (!ipaddr.IPv6.isValid(text)) return undefined
    // ipaddr.js reads the IPv4 tail of `::ffff:010.0.0.1` or `::ffff:0x7f.0.0.1` loosely.
    if (text.includes('.')) {
      const zone = text.indexOf('%')
      const tail = text.slice(text.lastIndexOf(':') + 1, zone < 0 ? undefined : zone)
      if (!ipaddr.IPv4.isValidFourPartDecimal(tail)) return undefined
    }
    return ipaddr.IPv6.parse(text)
  } catch {
    return undefined
  }
}

const PREFIX_LENGTH = /^(?:0|[1-9]\d{0,2})$/

/** A CIDR `address/bits` held to `strictAddress`, the prefix length in plain decimal and in range. */
export function strictCidr(text: string): [ipaddr.IPv4 | ipaddr.IPv6, number] | undefined {
  const slash = text.indexOf('/')
  if (slash < 0) return undefined
  const addr = strictAddress(text.slice(0, slash))
  const bits = text.slice(slash + 1)
  if (addr === undefined || !PREFIX_LENGTH.test(bits)) return undefined
  const n = Number(bits)
  return n <= (addr.kind() === 'ipv4' ? 32 : 128) ? [addr, n] : undefined
}

const isAddressOrCidr = (s: string): boolean =>
  (s.includes('/') ? strictCidr(s) : strictAddress(s)) !== undefined

/** An IP address or a CIDR (allow / deny lists). */
export const addressOrCidr = z
  .string()
  .refine(isAddressOrCidr, { message: 'expected an IP address (dotted-decimal IPv4 or IPv6) or a CIDR' })

const trustEntry = z
  .string()
  .refine((s) => (NAMED_RANGES as readonly string[]).includes(s) || isAddressOrCidr(s), {
    message: `expected an IP address (dotted-decimal IPv4 or IPv6), a CIDR, or one of ${NAMED_RANGES.join(', ')}`,
  })

/**
 * `trustProxy`: `false` (the socket address is the client), a hop count, or the
 * proxies' addresses / CIDRs / named ranges. `true` is refused: trusting every
 * hop lets any client choose its own address.
 */
export const trustProxySchema = z
  .union(
    [z.literal(false), z.int().min(1).max(32), trustEntry.transform((s) => [s]), z.array(trustEntry).min(1)],
    {
      error: (issue) =>
        issue.input === true
          ? 'true is refused: trust a hop count or a list of proxy addresses / CIDRs (any client could forge X-Forwarded-For)'
          : 'expected false, a hop count (1-32), or a list of IPs / CIDRs / loopback / linklocal / uniquelocal',
    },
  )
  .default(false)

export type TrustProxyOption = z.input<typeof trustProxySchema>

/** IPv6 clients are keyed by this prefix length (a /64 is what one subscriber gets). */
export const ipv6SubnetSchema = z.int().min(32).max(128).default(64)
