import { z } from 'zod'
import ipaddr from 'ipaddr.js'

const NAMED_RANGES = ['loopback', 'linklocal', 'uniquelocal'] as const

const isAddressOrCidr = (s: string): boolean => {
  try {
    if (s.includes('/')) ipaddr.parseCIDR(s)
    else ipaddr.parse(s)
    return true
  } catch {
    return false
  }
}

/** An IP address or a CIDR (allow / deny lists). */
export const addressOrCidr = z
  .string()
  .refine(isAddressOrCidr, { message: 'expected an IP address or a CIDR' })

const trustEntry = z
  .string()
  .refine((s) => (NAMED_RANGES as readonly string[]).includes(s) || isAddressOrCidr(s), {
    message: `expected an IP address, a CIDR, or one of ${NAMED_RANGES.join(', ')}`,
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
