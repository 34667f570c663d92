/**
 * A small authoritative DNS server for tests: UDP on loopback (dns-packet), answering
 * PTR, A and AAAA from a table and counting the queries it gets — what a real
 * `node:dns/promises` Resolver is pointed at to verify crawlers.
 */
import dgram from 'node:dgram'
import { once } from 'node:events'
import dnsPacket from 'dns-packet'
import ipaddr from 'ipaddr.js'

/** The reverse-zone name of an address: in-addr.arpa by octets, ip6.arpa by nibbles. */
export function arpa(ip: string): string {
  const address = ipaddr.parse(ip)
  if (address.kind() === 'ipv4') return `${ip.split('.').reverse().join('.')}.in-addr.arpa`
  const hex = (address as ipaddr.IPv6)
    .toNormalizedString()
    .split(':')
    .map((group) => group.padStart(4, '0'))
    .join('')
  return `${[...hex].reverse().join('.')}.ip6.arpa`
}

/** What the server knows: PTR names by address, A and AAAA addresses by host name. */
export interface Zone {
  readonly ptr?: Readonly<Record<string, readonly string[]>>
  readonly a?: Readonly<Record<string, readonly string[]>>
  readonly aaaa?: Readonly<Record<string, readonly string[]>>
  /** Names answered SERVFAIL. */
  readonly servfail?: readonly string[]
}

export interface DnsServer {
  readonly server: string
  /** Queries received, by `TYPE name`. */
  readonly queries: Map<string, number>
  count(type?: string): number
  close(): Promise<void>
}

const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 } as const

/**
 * An authoritative UDP DNS server on 127.0.0.1 (random port). A name it knows without a
 * record of the type asked is NODATA, one it does not know NXDOMAIN. `silent` receives and
 * counts but never answers; `delayMs` holds every answer back.
 */
export async function startDns(zone: Zone, { silent = false, delayMs = 0 } = {}): Promise<DnsServer> {
  const records = new Map<string, dnsPacket.Answer[]>()
  const add = (name: string, answer: dnsPacket.Answer): void => {
    const key = name.toLowerCase()
    records.set(key, [...(records.get(key) ?? []), answer])
  }
  for (const [ip, hosts] of Object.entries(zone.ptr ?? {}))
    for (const host of hosts) add(arpa(ip), { type: 'PTR', name: arpa(ip), ttl: 60, data: host })
  for (const [host, ips] of Object.entries(zone.a ?? {}))
    for (const ip of ips) add(host, { type: 'A', name: host, ttl: 60, data: ip })
  for (const [host, ips] of Object.entries(zone.aaaa ?? {}))
    for (const ip of ips) add(host, { type: 'AAAA', name: host, ttl: 60, data: ip })
  const servfail = new Set((zone.servfail ?? []).map((n) => n.toLowerCase()))

  const socket = dgram.createSocket('udp4')
  const queries = new Map<string, number>()
  const timers = new Set<NodeJS.Timeout>()
  socket.on('message', (message, peer) => {
    const query = dnsPacket.decode(message)
    const question = query.questions?.[0]
    if (question === undefined) return
    const name = question.name.toLowerCase()
    const key = `${question.type} ${name}`
    queries.set(key, (queries.get(key) ?? 0) + 1)
    if (silent) return
    const known = records.get(name)
    const rcode = servfail.has(name) ? RCODE.SERVFAIL : known === undefined ? RCODE.NXDOMAIN : RCODE.NOERROR
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode,
      questions: [question],
      answers: rcode === RCODE.NOERROR ? (known ?? []).filter((r) => r.type === question.type) : [],
    })
    const send = (): void => void socket.send(reply, peer.port, peer.address)
    if (delayMs === 0) return send()
    const timer = setTimeout(() => {
      timers.delete(timer)
      send()
    }, delayMs)
    timers.add(timer)
  })
  socket.bind(0, '127.0.0.1')
  await once(socket, 'listening')
  return {
    server: `127.0.0.1:${socket.address().port}`,
    queries,
    count: (type) =>
      [...queries].reduce((n, [k, v]) => (type === undefined || k.startsWith(`${type} `) ? n + v : n), 0),
    async close() {
      for (const timer of timers) clearTimeout(timer)
      socket.close()
      await once(socket, 'close')
    },
  }
}
