/**
 * Crawler verification against a real DNS server: a small authoritative one on loopback
 * (UDP, dns-packet) that answers PTR, A and AAAA from a table and counts the queries it
 * gets, queried by a real `node:dns/promises` Resolver through `dnsLookups()`.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  KNOWN_CRAWLERS,
  createCrawlerVerifier,
  dnsLookups,
  type CrawlerVerifier,
  type CrawlerVerifierOptions,
  type DnsLookups,
} from '../src/anomaly/crawlers.js'
import { arpa, startDns, type DnsServer, type Zone } from '../../../test/helpers/dns-server.js'

const GOOGLEBOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
const BINGBOT = 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)'
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'

const ZONE: Zone = {
  ptr: {
    // Real crawlers: the name mixes case and the answer is forward-confirmed.
    '66.249.66.1': ['Crawl-66-249-66-1.GoogleBot.COM'],
    '2001:4860:4801:2008::1': ['crawl-2001-4860-4801-2008--1.googlebot.com'],
    '157.55.39.1': ['msnbot-157-55-39-1.search.msn.com'],
    // A PTR elsewhere, with its forward lookup consistent.
    '203.0.113.10': ['host-10.example.net'],
    // Under googlebot.com, but Google's zone says the name is another address.
    '203.0.113.11': ['crawl-66-249-66-9.googlebot.com'],
    // Look-alikes, forward-confirmed by their owner.
    '203.0.113.12': ['crawl.evilgooglebot.com', 'googlebot.com.attacker.net'],
    // '203.0.113.13' has no PTR: NXDOMAIN.
    // Delayed or counted cases.
    ...Object.fromEntries(
      Array.from({ length: 5 }, (_, i) => [`66.249.70.${i + 1}`, [`crawl-66-249-70-${i + 1}.googlebot.com`]]),
    ),
  },
  a: {
    'crawl-66-249-66-1.googlebot.com': ['66.249.66.1'],
    'msnbot-157-55-39-1.search.msn.com': ['157.55.39.1'],
    'host-10.example.net': ['203.0.113.10'],
    'crawl-66-249-66-9.googlebot.com': ['66.249.66.9'],
    'crawl.evilgooglebot.com': ['203.0.113.12'],
    'googlebot.com.attacker.net': ['203.0.113.12'],
    ...Object.fromEntries(
      Array.from({ length: 5 }, (_, i) => [`crawl-66-249-70-${i + 1}.googlebot.com`, [`66.249.70.${i + 1}`]]),
    ),
  },
  aaaa: {
    // Spelled out in full: the Resolver's answer comes back compact, and must still compare equal.
    'crawl-2001-4860-4801-2008--1.googlebot.com': ['2001:4860:4801:2008:0:0:0:1'],
  },
  servfail: [arpa('203.0.113.14')],
}

/** Lookups that find nothing, for the tests that make none. */
const NO_DNS: DnsLookups = { reverse: () => Promise.resolve([]), resolve: () => Promise.resolve([]) }

const cleanup: (() => unknown)[] = []
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step()
})

/** A server with `zone` and a verifier whose lookups ask it alone. */
async function setup(
  options: Omit<CrawlerVerifierOptions, 'dns'> = {},
  server: { silent?: boolean; delayMs?: number } = {},
): Promise<{ dns: DnsServer; crawlers: CrawlerVerifier }> {
  const dns = await startDns(ZONE, server)
  cleanup.push(() => dns.close())
  const crawlers = createCrawlerVerifier({
    ...options,
    dns: dnsLookups({ servers: [dns.server], timeoutMs: options.timeoutMs ?? 1000 }),
  })
  cleanup.push(() => crawlers.close())
  return { dns, crawlers }
}

/** The verdict once the verification it starts has settled. */
async function verdict(
  crawlers: CrawlerVerifier,
  ip: string,
  ua = GOOGLEBOT,
): Promise<string | false | undefined> {
  const first = crawlers.verified(ip, ua)
  if (first !== undefined) return first
  await crawlers.settled(ip)
  return crawlers.verified(ip, ua)
}

describe('crawler claims', () => {
  const crawlers = createCrawlerVerifier({ dns: NO_DNS })

  it('reads the claim from the User-Agent', () => {
    expect(crawlers.claimed(GOOGLEBOT)?.name).toBe('google')
    expect(crawlers.claimed('Mozilla/5.0 (compatible; Google-InspectionTool/1.0)')?.name).toBe('google')
    expect(crawlers.claimed('AdsBot-Google (+http://www.google.com/adsbot.html)')?.name).toBe('google')
    expect(crawlers.claimed(BINGBOT)?.name).toBe('bing')
    expect(
      crawlers.claimed('Mozilla/5.0 (compatible; Applebot/0.1; +http://www.apple.com/go/applebot)')?.name,
    ).toBe('apple')
    expect(
      crawlers.claimed('Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)')
        ?.name,
    ).toBe('yahoo')
    expect(crawlers.claimed('Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)')?.name).toBe(
      'yandex',
    )
    expect(
      crawlers.claimed('Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)')?.name,
    ).toBe('yandex')
    expect(
      crawlers.claimed('Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)')
        ?.name,
    ).toBe('baidu')
  })

  it('leaves browsers, empty and absent User-Agents unclaimed, and answers them false without a lookup', () => {
    for (const ua of [
      BROWSER,
      '',
      undefined,
      'Mozilla/5.0 ... YaBrowser/24.1 Yowser/2.5 Safari/537.36',
      'curl/8.5.0',
    ])
      expect(crawlers.claimed(ua)).toBeUndefined()
    expect(crawlers.verified('66.249.66.1', BROWSER)).toBe(false)
    expect(crawlers.verified('66.249.66.1', undefined)).toBe(false)
    expect(crawlers.verified('not an address', GOOGLEBOT)).toBe(false)
  })

  it('claims the crawler named first, with the combined pattern and with one pattern per rule', () => {
    const ua = 'Mozilla/5.0 (compatible; bingbot/2.0) Googlebot/2.1'
    expect(crawlers.claimed(ua)?.name).toBe('bing')
    // Differing flags (one rule is case-sensitive, with a sticky flag that must not carry state):
    // the rules are tested one by one, and the earliest match still wins.
    const mixed = createCrawlerVerifier({
      crawlers: [
        { name: 'google', userAgent: /Googlebot/gy, domains: ['googlebot.com'] },
        { name: 'bing', userAgent: /bingbot/i, domains: ['search.msn.com'] },
      ],
      dns: NO_DNS,
    })
    expect(mixed.claimed(ua)?.name).toBe('bing')
    expect(mixed.claimed('Googlebot/2.1')?.name).toBe('google')
    expect(mixed.claimed('Googlebot/2.1')?.name).toBe('google')
    expect(mixed.claimed('googlebot/2.1')).toBeUndefined()
  })

  it('refuses rules it cannot use, and bad numbers', () => {
    const dns = NO_DNS
    expect(() =>
      createCrawlerVerifier({ dns, crawlers: [{ name: '', userAgent: /x/, domains: ['x.com'] }] }),
    ).toThrow(/name/)
    expect(() =>
      createCrawlerVerifier({
        dns,
        crawlers: [KNOWN_CRAWLERS[0]!, { name: 'google', userAgent: /x/, domains: ['x.com'] }],
      }),
    ).toThrow(/unique/)
    expect(() =>
      createCrawlerVerifier({ dns, crawlers: [{ name: 'x', userAgent: /x/, domains: [] }] }),
    ).toThrow(/domains/)
    expect(() => createCrawlerVerifier({ dns, cacheSize: 0 })).toThrow(RangeError)
    expect(() => createCrawlerVerifier({ dns, ttlMs: 0 })).toThrow(RangeError)
    expect(() => createCrawlerVerifier({ dns, ttlMs: { refused: Number.NaN } })).toThrow(RangeError)
    expect(() => createCrawlerVerifier({ dns, maxInFlight: 1.5 })).toThrow(RangeError)
  })
})

describe('crawler verification over real DNS', () => {
  it('verifies Googlebot: its PTR under googlebot.com (any case), forward-confirmed', async () => {
    const { dns, crawlers } = await setup()
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBeUndefined()
    await crawlers.settled('66.249.66.1')
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe('google')
    expect(dns.queries.get(`PTR ${arpa('66.249.66.1')}`)).toBe(1)
    expect(dns.queries.get('A crawl-66-249-66-1.googlebot.com')).toBe(1)
    // The same address claiming another crawler is lying, and that needs no new lookup.
    expect(crawlers.verified('66.249.66.1', BINGBOT)).toBe(false)
    expect(dns.count()).toBe(2)
  })

  it('verifies Bingbot under search.msn.com', async () => {
    const { crawlers } = await setup()
    expect(await verdict(crawlers, '157.55.39.1', BINGBOT)).toBe('bing')
  })

  it('refuses a Googlebot whose PTR is elsewhere, without a forward lookup', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '203.0.113.10')).toBe(false)
    expect(dns.count('PTR')).toBe(1)
    expect(dns.count('A')).toBe(0)
  })

  it('refuses a PTR under googlebot.com whose forward lookup is another address', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '203.0.113.11')).toBe(false)
    expect(dns.queries.get('A crawl-66-249-66-9.googlebot.com')).toBe(1)
  })

  it('refuses look-alike domains (no dot boundary, or googlebot.com as a label), never looking them up', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '203.0.113.12')).toBe(false)
    expect(dns.count('A')).toBe(0)
  })

  it('refuses an address without PTR (NXDOMAIN) and one whose reverse zone fails (SERVFAIL)', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '203.0.113.13')).toBe(false)
    expect(await verdict(crawlers, '203.0.113.14')).toBe(false)
    expect(dns.count('PTR')).toBe(2)
  })

  it('gives up on a server that never answers at the deadline: unknown, then false, nothing thrown', async () => {
    const { dns, crawlers } = await setup({ timeoutMs: 300 }, { silent: true })
    const started = performance.now()
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBeUndefined()
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBeUndefined()
    await crawlers.settled('66.249.66.1')
    const waited = performance.now() - started
    expect(waited).toBeGreaterThanOrEqual(290)
    expect(waited).toBeLessThan(1500)
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe(false)
    expect(dns.count('PTR')).toBe(1)
  })

  it('answers from the cache: the second call makes no query', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '66.249.66.1')).toBe('google')
    expect(await verdict(crawlers, '203.0.113.10')).toBe(false)
    const before = dns.count()
    for (let i = 0; i < 100; i++) {
      expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe('google')
      expect(crawlers.verified('203.0.113.10', GOOGLEBOT)).toBe(false)
    }
    await crawlers.settled('66.249.66.1')
    expect(dns.count()).toBe(before)
  })

  it('asks again once an answer has expired, a refusal sooner than a verification', async () => {
    const { dns, crawlers } = await setup({ ttlMs: { verified: 60_000, refused: 100 } })
    expect(await verdict(crawlers, '66.249.66.1')).toBe('google')
    expect(await verdict(crawlers, '203.0.113.10')).toBe(false)
    await new Promise((r) => setTimeout(r, 150))
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('203.0.113.10', GOOGLEBOT)).toBeUndefined()
    await crawlers.settled('203.0.113.10')
    expect(dns.queries.get(`PTR ${arpa('66.249.66.1')}`)).toBe(1)
    expect(dns.queries.get(`PTR ${arpa('203.0.113.10')}`)).toBe(2)
  })

  it('keeps at most cacheSize addresses, the least recently used out', async () => {
    const { dns, crawlers } = await setup({ cacheSize: 2 })
    for (const ip of ['66.249.70.1', '66.249.70.2', '66.249.70.3'])
      expect(await verdict(crawlers, ip)).toBe('google')
    expect(crawlers.verified('66.249.70.3', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('66.249.70.2', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('66.249.70.1', GOOGLEBOT)).toBeUndefined()
    await crawlers.settled('66.249.70.1')
    expect(dns.queries.get(`PTR ${arpa('66.249.70.1')}`)).toBe(2)
  })

  it('deduplicates: ten concurrent calls for one address make one PTR query', async () => {
    const { dns, crawlers } = await setup({}, { delayMs: 50 })
    const answers = Array.from({ length: 10 }, () => crawlers.verified('66.249.66.1', GOOGLEBOT))
    expect(answers).toEqual(Array.from({ length: 10 }, () => undefined))
    await Promise.all(Array.from({ length: 10 }, () => crawlers.settled('66.249.66.1')))
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe('google')
    expect(dns.count('PTR')).toBe(1)
    expect(dns.count('A')).toBe(1)
  })

  it('starts no verification past maxInFlight, and starts it once there is room', async () => {
    const { dns, crawlers } = await setup({ maxInFlight: 2 }, { delayMs: 100 })
    expect(crawlers.verified('66.249.70.1', GOOGLEBOT)).toBeUndefined()
    expect(crawlers.verified('66.249.70.2', GOOGLEBOT)).toBeUndefined()
    expect(crawlers.verified('66.249.70.3', GOOGLEBOT)).toBeUndefined()
    await Promise.all(['66.249.70.1', '66.249.70.2', '66.249.70.3'].map((ip) => crawlers.settled(ip)))
    expect(dns.queries.get(`PTR ${arpa('66.249.70.3')}`)).toBeUndefined()
    expect(crawlers.verified('66.249.70.1', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('66.249.70.2', GOOGLEBOT)).toBe('google')
    expect(await verdict(crawlers, '66.249.70.3')).toBe('google')
    expect(dns.count('PTR')).toBe(3)
  })

  it('close() in flight: nothing thrown, lookups cancelled at once, results ignored, no handle left', async () => {
    const server = await startDns(ZONE, { silent: true })
    cleanup.push(() => server.close())
    // The real lookups, watched: how each query ends, and when.
    const real = dnsLookups({ servers: [server.server], timeoutMs: 5000 })
    const ended: { code: unknown; at: number }[] = []
    const watch = <T>(p: Promise<T>): Promise<T> => {
      p.catch((err: { code?: unknown }) => ended.push({ code: err.code, at: performance.now() }))
      return p
    }
    const watched: DnsLookups = {
      reverse: (ip) => watch(real.reverse(ip)),
      resolve: (host, family) => watch(real.resolve(host, family)),
      cancel: () => real.cancel?.(),
    }
    const handles = process.getActiveResourcesInfo()
    const count = (list: string[], kind: string): number => list.filter((r) => r === kind).length
    const crawlers = createCrawlerVerifier({ dns: watched, timeoutMs: 5000 })
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBeUndefined()
    expect(crawlers.verified('2001:4860:4801:2008::1', GOOGLEBOT)).toBeUndefined()
    await new Promise((r) => setTimeout(r, 50))
    expect(server.count('PTR')).toBe(2)

    const closedAt = performance.now()
    expect(() => crawlers.close()).not.toThrow()
    expect(() => crawlers.close()).not.toThrow()
    await Promise.all([crawlers.settled('66.249.66.1'), crawlers.settled('2001:4860:4801:2008::1')])
    await new Promise((r) => setImmediate(r))
    expect(ended).toHaveLength(2)
    for (const end of ended) {
      expect(end.code).toBe('ECANCELLED')
      expect(end.at - closedAt).toBeLessThan(100)
    }
    // Nothing cached from the cancelled work, and nothing new started.
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBeUndefined()
    expect(crawlers.verified('157.55.39.1', BINGBOT)).toBeUndefined()
    await new Promise((r) => setTimeout(r, 20))
    expect(server.count('PTR')).toBe(2)
    // No kind of resource more than before the verifier (the last test's server may still
    // have been closing then).
    const now = process.getActiveResourcesInfo()
    for (const kind of new Set(now)) expect(count(now, kind), kind).toBeLessThanOrEqual(count(handles, kind))
  })
})

describe('IPv6', () => {
  it('takes an IPv4-mapped address for its IPv4 address: one verification, one cache entry', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '::ffff:66.249.66.1')).toBe('google')
    expect(crawlers.verified('66.249.66.1', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('::FFFF:66.249.66.1', GOOGLEBOT)).toBe('google')
    expect(dns.queries.get(`PTR ${arpa('66.249.66.1')}`)).toBe(1)
    expect(dns.count('AAAA')).toBe(0)
  })

  it('verifies an IPv6 Googlebot by ip6.arpa and AAAA, however the address is spelled', async () => {
    const { dns, crawlers } = await setup()
    expect(await verdict(crawlers, '2001:4860:4801:2008::1')).toBe('google')
    expect(crawlers.verified('2001:4860:4801:2008:0:0:0:1', GOOGLEBOT)).toBe('google')
    expect(crawlers.verified('2001:4860:4801:2008:0000::0001', GOOGLEBOT)).toBe('google')
    expect(dns.queries.get(`PTR ${arpa('2001:4860:4801:2008::1')}`)).toBe(1)
    expect(dns.queries.get('AAAA crawl-2001-4860-4801-2008--1.googlebot.com')).toBe(1)
    expect(dns.count('A')).toBe(0)
  })

  it('refuses an IPv6 address whose PTR name has only an IPv4 address', async () => {
    const dns = await startDns({
      ptr: { '2001:db8::7': ['crawl-66-249-66-1.googlebot.com'] },
      a: { 'crawl-66-249-66-1.googlebot.com': ['66.249.66.1'] },
    })
    cleanup.push(() => dns.close())
    const crawlers = createCrawlerVerifier({ dns: dnsLookups({ servers: [dns.server] }) })
    cleanup.push(() => crawlers.close())
    expect(await verdict(crawlers, '2001:db8::7')).toBe(false)
    expect(dns.queries.get('AAAA crawl-66-249-66-1.googlebot.com')).toBe(1)
  })
})
