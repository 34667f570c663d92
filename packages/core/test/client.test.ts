import type { IncomingMessage } from 'node:http'
import fc from 'fast-check'
import ipaddr from 'ipaddr.js'
import { describe, expect, it, vi } from 'vitest'
import { createClientResolver, parseOptions } from '../src/index.js'
import { maskAddress } from '../src/client/index.js'

const req = (remoteAddress: string | undefined, headers: Record<string, string> = {}): IncomingMessage =>
  ({ socket: { remoteAddress }, headers }) as unknown as IncomingMessage

const resolver = (trustProxy: false | number | string[] = false, onUntrustedForwardedFor?: () => void) =>
  createClientResolver({
    trustProxy: parseOptions({ trustProxy }).trustProxy,
    ipv6Subnet: 64,
    ...(onUntrustedForwardedFor ? { onUntrustedForwardedFor } : {}),
  })

describe('client identity', () => {
  it('is the socket address, IPv4-mapped IPv6 folded to IPv4', () => {
    const r = resolver()
    expect(r.resolve(req('203.0.113.9'))).toEqual({ ip: '203.0.113.9', key: '203.0.113.9' })
    expect(r.resolve(req('::ffff:192.0.2.1'))).toEqual({ ip: '192.0.2.1', key: '192.0.2.1' })
    expect(r.resolve(req('::ffff:c000:201'))).toEqual({ ip: '192.0.2.1', key: '192.0.2.1' })
  })

  it('keys IPv6 clients by the network of any prefix length, as ipaddr.js computes it (property)', () => {
    fc.assert(
      fc.property(fc.ipV6(), fc.integer({ min: 32, max: 127 }), (address, bits) => {
        const r = createClientResolver({ trustProxy: false, ipv6Subnet: bits })
        const parsed = ipaddr.parse(address)
        fc.pre(parsed.kind() === 'ipv6' && !(parsed as ipaddr.IPv6).isIPv4MappedAddress())
        const expected = ipaddr.IPv6.networkAddressFromCIDR(`${parsed.toString()}/${bits}`).toString()
        expect(r.resolve(req(address)).key).toBe(`${expected}/${bits}`)
      }),
    )
  })

  it('keys IPv6 clients by their /64', () => {
    const r = resolver()
    const keys = new Set<string>()
    for (let i = 0; i < 1000; i++)
      keys.add(r.resolve(req(`2001:db8:1:2:${i.toString(16)}::${(i * 7).toString(16)}`)).key)
    expect([...keys]).toEqual(['2001:db8:1:2::/64'])
    expect(r.resolve(req('2001:db8:1:3::1')).key).toBe('2001:db8:1:3::/64')
  })

  it('ignores X-Forwarded-For from an untrusted peer, and warns once', () => {
    const warn = vi.fn()
    const r = resolver(false, warn)
    expect(r.resolve(req('198.51.100.7', { 'x-forwarded-for': '1.2.3.4' })).ip).toBe('198.51.100.7')
    expect(r.resolve(req('198.51.100.8', { 'x-forwarded-for': '1.2.3.5' })).ip).toBe('198.51.100.8')
    expect(warn).toHaveBeenCalledTimes(1)
    // Trusting loopback does not make a public peer trusted.
    expect(resolver(['loopback']).resolve(req('198.51.100.7', { 'x-forwarded-for': '1.2.3.4' })).ip).toBe(
      '198.51.100.7',
    )
  })

  it('walks X-Forwarded-For through trusted proxies only', () => {
    const r = resolver(['loopback', '10.0.0.0/8'])
    expect(r.resolve(req('127.0.0.1', { 'x-forwarded-for': '203.0.113.1, 10.1.1.1' })).ip).toBe('203.0.113.1')
    // A client-supplied left-most entry is not believed past an untrusted hop.
    expect(r.resolve(req('127.0.0.1', { 'x-forwarded-for': '6.6.6.6, 203.0.113.1, 10.1.1.1' })).ip).toBe(
      '203.0.113.1',
    )
    // Garbage stops the walk at the last trusted hop.
    expect(r.resolve(req('127.0.0.1', { 'x-forwarded-for': 'evil, 10.1.1.1' })).ip).toBe('10.1.1.1')
    // Only dotted quads: decimal and hex spellings are someone's trick.
    expect(r.resolve(req('127.0.0.1', { 'x-forwarded-for': '2130706433' })).ip).toBe('127.0.0.1')
  })

  it('counts hops when trustProxy is a number', () => {
    expect(resolver(1).resolve(req('10.0.0.2', { 'x-forwarded-for': '6.6.6.6, 203.0.113.1' })).ip).toBe(
      '203.0.113.1',
    )
    expect(
      resolver(2).resolve(req('10.0.0.2', { 'x-forwarded-for': '6.6.6.6, 203.0.113.1, 10.0.0.1' })).ip,
    ).toBe('203.0.113.1')
    expect(resolver(3).resolve(req('10.0.0.2', { 'x-forwarded-for': '203.0.113.1' })).ip).toBe('203.0.113.1')
  })

  it('survives a vanished socket and any header text', () => {
    const r = resolver(['loopback'])
    expect(r.resolve(req(undefined)).key).toBe('unknown')
    fc.assert(
      fc.property(fc.string(), (xff) => {
        const id = r.resolve(req('127.0.0.1', { 'x-forwarded-for': xff }))
        expect(typeof id.key).toBe('string')
      }),
    )
  })

  it('masks addresses for logs', () => {
    expect(maskAddress('203.0.113.77')).toBe('203.0.113.0/24')
    expect(maskAddress('2001:db8:1:2::77')).toBe('2001:db8:1::/48')
  })
})
