/**
 * Verified search-engine crawlers, for the anomaly engine's allowlist. A User-Agent is a
 * claim anyone can make; the proof is the one Google and Bing document, forward-confirmed
 * reverse DNS: the PTR name of the client's address lies under the crawler's own domains,
 * and a forward lookup of that name gives the same address back. The first half alone
 * proves nothing, because whoever holds an address block writes its reverse zone; only
 * the crawler's owner can make its forward zone point back.
 *
 * Lookups never sit on a request's path: `verified()` answers from a bounded cache at
 * once and, when it does not know yet, starts one verification in the background (one per
 * address, a bounded number at a time, each within a deadline). Every failure — a timeout,
 * a refused or broken server, a throwing `DnsLookups` — ends as "not verified" and never
 * as an exception.
 */
import { Resolver } from 'node:dns/promises'
import ipaddr from 'ipaddr.js'
import { LRUCache } from 'lru-cache'

/**
 * A crawler that can be verified: the User-Agent that claims it, and the domains its PTR
 * names lie under.
 *
 * @example
 * const seznam: CrawlerRule = { name: 'seznam', userAgent: /SeznamBot/i, domains: ['seznam.cz'] }
 */
export interface CrawlerRule {
  /** Its name, as `verified()` answers it. Unique in a verifier, not empty. */
  readonly name: string
  /** Matches the User-Agents that claim it. Flags `g` and `y` are ignored (no state between tests). */
  readonly userAgent: RegExp
  /** The domains its PTR names lie under: a name matches one exactly or as a subdomain. */
  readonly domains: readonly string[]
}

/**
 * The crawlers verified out of the box, each with the User-Agents and reverse-DNS domains
 * its operator documents. Google's user-triggered fetchers (Feedfetcher, Read Aloud, Site
 * Verifier) are not claimed: they act for a person rather than crawl, and they come from
 * `gae.googleusercontent.com`, a zone Google Cloud customers' machines share
 * (`*.bc.googleusercontent.com` is every Compute Engine VM, forward-confirmed), so no
 * name under `googleusercontent.com` is accepted. DuckDuckBot is verified against a
 * published address list, not DNS, so it is not here either.
 *
 * @example
 * createCrawlerVerifier({ crawlers: [...KNOWN_CRAWLERS, { name: 'seznam', userAgent: /SeznamBot/i, domains: ['seznam.cz'] }] })
 */
export const KNOWN_CRAWLERS: readonly CrawlerRule[] = Object.freeze([
  Object.freeze({
    name: 'google',
    // The common crawlers (googlebot.com) and the special-case ones (google.com).
    userAgent:
      /Googlebot|Storebot-Google|Google-InspectionTool|GoogleOther|Google-CloudVertexBot|AdsBot-Google|Mediapartners-Google|APIs-Google/i,
    domains: Object.freeze(['googlebot.com', 'google.com']),
  }),
  Object.freeze({
    name: 'bing',
    userAgent: /bingbot|BingPreview|msnbot|adidxbot/i,
    domains: Object.freeze(['search.msn.com']),
  }),
  Object.freeze({ name: 'apple', userAgent: /Applebot/i, domains: Object.freeze(['applebot.apple.com']) }),
  Object.freeze({ name: 'yahoo', userAgent: /Yahoo! Slurp/i, domains: Object.freeze(['crawl.yahoo.net']) }),
  Object.freeze({
    name: 'yandex',
    // Yandex's robots, not its browser (YaBrowser) nor its apps (YandexSearch), which
    // people use from any address and would otherwise be called liars.
    userAgent:
      /Yandex(?:[A-Za-z]{0,32}Bot|Images|Video|Media|Favicons|Webmaster|Metrika|Accessibility|Market|Direct|Turbo|Blogs|News|Sitelinks|Tracker|Calendar|Additional|PagesChecker|ImageResizer)/i,
    domains: Object.freeze(['yandex.ru', 'yandex.net', 'yandex.com']),
  }),
  Object.freeze({
    name: 'baidu',
    userAgent: /Baiduspider/i,
    domains: Object.freeze(['baidu.com', 'baidu.jp']),
  }),
])

/**
 * The two lookups a verification makes. Both reject when there is no answer; a rejection
 * whose `code` is `ENOTFOUND` or `ENODATA` is a definite "no such record", any other a
 * failure to find out.
 *
 * @example
 * const dns: DnsLookups = dnsLookups({ servers: ['127.0.0.1:5353'], timeoutMs: 500 })
 * await dns.reverse('66.249.66.1')                      // ['crawl-66-249-66-1.googlebot.com']
 * await dns.resolve('crawl-66-249-66-1.googlebot.com', 4) // ['66.249.66.1']
 */
export interface DnsLookups {
  /** The PTR names of an address. */
  reverse(ip: string): Promise<string[]>
  /** The A (4) or AAAA (6) addresses of a host name. */
  resolve(host: string, family: 4 | 6): Promise<string[]>
  /**
   * Abandon every outstanding lookup (they reject). The verifier that was given these
   * lookups calls it from `close()`, so that no query outlives it.
   */
  cancel?(): void
}

/** Options of {@link dnsLookups}. */
export interface DnsLookupsOptions {
  /** Name servers, as `Resolver#setServers` takes them (`'127.0.0.1:5353'`, `'[::1]:53'`). Default: the system's. */
  readonly servers?: readonly string[]
  /** How long one query waits for its answer, in ms (default 2,000); it is sent once. */
  readonly timeoutMs?: number
  /**
   * A `Resolver` of your own instead of a new one (then `servers` and `timeoutMs` do not
   * apply: it keeps its settings). `cancel()` cancels every query outstanding on it, so
   * give it to these lookups alone.
   */
  readonly resolver?: Resolver
}

/**
 * DNS lookups on a `node:dns/promises` `Resolver` of their own: c-ares, not the thread
 * pool `dns.lookup` queues on, and a timeout per query.
 *
 * @example
 * const verifier = createCrawlerVerifier({ dns: dnsLookups({ servers: ['10.0.0.53'], timeoutMs: 1000 }) })
 */
export function dnsLookups(options: DnsLookupsOptions = {}): DnsLookups {
  let resolver = options.resolver
  if (resolver === undefined) {
    // One try: the verifier's deadline bounds the whole verification, and c-ares' default
    // of four tries with growing timeouts would keep a query (and the event loop) alive
    // long after that deadline gave up on it.
    resolver = new Resolver({ timeout: positive(options.timeoutMs, 2000, 'timeoutMs'), tries: 1 })
    if (options.servers !== undefined) resolver.setServers(options.servers)
  } else if (options.servers !== undefined || options.timeoutMs !== undefined) {
    throw new RangeError('dnsLookups: servers and timeoutMs configure a new Resolver, not one given')
  }
  const own = resolver
  return {
    reverse: (ip) => own.reverse(ip),
    // Asked as an absolute name (the trailing dot): a relative one that is not found would be
    // tried again under each of the system's search domains, names no crawler lives under.
    resolve: (host, family) => {
      const absolute = host.endsWith('.') ? host : `${host}.`
      return family === 4 ? own.resolve4(absolute) : own.resolve6(absolute)
    },
    cancel: () => own.cancel(),
  }
}

/** How long answers are kept, in ms. */
export interface CrawlerTtl {
  /** An address verified as a crawler (default 24 h). */
  readonly verified?: number
  /** An address found not to be one: its PTR elsewhere, absent, or not confirmed forward (default 1 h). */
  readonly refused?: number
  /**
   * An address whose lookups failed (timeout, SERVFAIL, refused): not verified either, but
   * asked again sooner, so that a DNS outage does not shut a real crawler out for an hour
   * (default 1 min).
   */
  readonly failed?: number
}

/** Options of {@link createCrawlerVerifier}. */
export interface CrawlerVerifierOptions {
  /** The crawlers that can be verified (default {@link KNOWN_CRAWLERS}). */
  readonly crawlers?: readonly CrawlerRule[]
  /** The lookups (default {@link dnsLookups} with `timeoutMs`). The verifier's `close()` calls their `cancel()`. */
  readonly dns?: DnsLookups
  /** Most addresses remembered, least recently used out (default 10,000). */
  readonly cacheSize?: number
  /** How long answers are kept: one number for all, or each kind of answer its own (24 h verified, 1 h refused, 1 min failed). */
  readonly ttlMs?: number | CrawlerTtl
  /** Deadline of one verification, reverse and forward lookups together, in ms (default 2,000). */
  readonly timeoutMs?: number
  /** Most verifications in flight; past it, none starts and the answer stays unknown (default 64). */
  readonly maxInFlight?: number
}

/**
 * Tells verified crawlers from clients that only say they are one.
 *
 * @example
 * const crawlers = createCrawlerVerifier()
 * const ua = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
 * crawlers.verified('66.249.66.1', ua) // undefined: not known yet, verification started
 * await crawlers.settled('66.249.66.1')
 * crawlers.verified('66.249.66.1', ua) // 'google'
 * crawlers.verified('203.0.113.9', ua) // undefined, then false: that address is not Google's
 * crawlers.close()
 */
export interface CrawlerVerifier {
  /**
   * Which crawler the User-Agent claims, or undefined. One test of one combined pattern
   * (one per rule when the rules' flags differ or a pattern numbers its groups); a
   * User-Agent that names two crawlers claims the one it names first.
   *
   * @example
   * crawlers.claimed('Mozilla/5.0 (compatible; bingbot/2.0)')?.name // 'bing'
   */
  claimed(userAgent: string | undefined): CrawlerRule | undefined
  /**
   * The verdict from the cache, synchronously: the crawler's name when `ip` is verified as
   * the crawler the User-Agent claims; false when it is not (the claim is a lie, or the
   * lookups failed), and also when the User-Agent claims no crawler or `ip` is no
   * address; undefined while unknown — and then one verification of `ip` starts in the
   * background, unless one is already in flight, `maxInFlight` are, or the verifier is
   * closed. An IPv4-mapped IPv6 address is its IPv4 address.
   *
   * @example
   * if (crawlers.verified(clientIp, req.headers['user-agent']) !== undefined) { ... }
   */
  verified(ip: string, userAgent: string | undefined): string | false | undefined
  /**
   * Resolves once the verification of `ip` in flight, if any, has settled (or the verifier
   * closed). Never rejects.
   *
   * @example
   * crawlers.verified(ip, ua)
   * await crawlers.settled(ip)
   */
  settled(ip: string): Promise<void>
  /**
   * Drops the verifications in flight (their lookups are cancelled, their results
   * ignored, `settled()` resolves) and starts no more; the cache still answers.
   * Idempotent.
   *
   * @example
   * server.on('close', () => crawlers.close())
   */
  close(): void
}

/** What a verification concludes: the rules the address was confirmed for (none: refused), or a failure. */
type Outcome = readonly CrawlerRule[] | typeof FAILED

const FAILED = Symbol('failed')
const NONE: readonly CrawlerRule[] = Object.freeze([])

/** PTR names looked at per address: a reverse zone can list any number, and each may cost a forward lookup. */
const MAX_NAMES = 8

/** One verification in flight. */
interface Pending {
  readonly ip: string
  done: boolean
  timer: NodeJS.Timeout | undefined
  release: () => void
  readonly settled: Promise<void>
}

/**
 * A verifier of crawlers' claims: a bounded cache of verdicts per address, and background
 * verifications by forward-confirmed reverse DNS.
 *
 * @example
 * const crawlers = createCrawlerVerifier({ timeoutMs: 1000, maxInFlight: 16 })
 * const verdict = crawlers.verified('66.249.66.1', 'Googlebot/2.1') // 'google' | false | undefined
 */
export function createCrawlerVerifier(options: CrawlerVerifierOptions = {}): CrawlerVerifier {
  const rules = checkRules(options.crawlers ?? KNOWN_CRAWLERS)
  const timeoutMs = positive(options.timeoutMs, 2000, 'timeoutMs')
  const maxInFlight = whole(options.maxInFlight, 64, 'maxInFlight')
  const ttl = ttls(options.ttlMs)
  const dns = options.dns ?? dnsLookups({ timeoutMs })
  const claim = claimMatcher(rules)
  const cache = new LRUCache<string, Outcome>({
    max: whole(options.cacheSize, 10_000, 'cacheSize'),
    ttl: ttl.verified,
  })
  const inFlight = new Map<string, Pending>()
  let closed = false

  function finish(pending: Pending, outcome: Outcome): void {
    if (pending.done) return
    pending.done = true
    clearTimeout(pending.timer)
    if (inFlight.get(pending.ip) === pending) inFlight.delete(pending.ip)
    if (!closed) {
      const kept = outcome === FAILED ? ttl.failed : outcome.length > 0 ? ttl.verified : ttl.refused
      cache.set(pending.ip, outcome, { ttl: kept })
    }
    pending.release()
  }

  function start(ip: string, family: 4 | 6): void {
    let release!: () => void
    const settled = new Promise<void>((resolve) => (release = resolve))
    const pending: Pending = { ip, done: false, timer: undefined, release, settled }
    inFlight.set(ip, pending)
    // Unref'd: a verification in the background should not hold a process open. The
    // lookups it abandons go on in c-ares until their own timeout, or until close().
    pending.timer = setTimeout(finish, timeoutMs, pending, FAILED)
    pending.timer.unref()
    verify(dns, rules, ip, family).then(
      (outcome) => finish(pending, outcome),
      () => finish(pending, FAILED),
    )
  }

  return {
    claimed: claim,

    verified(ip, userAgent) {
      const rule = claim(userAgent)
      if (rule === undefined) return false
      // A string equal to a cache key is that address in its canonical spelling, so the
      // usual cases skip parsing it (ipaddr.js takes microseconds): a plain IPv4 address
      // already known, and the same behind the '::ffff:' a dual-stack socket puts before it.
      let address: string | undefined = ip
      let known = cache.get(ip)
      if (known === undefined && ip.startsWith('::ffff:')) {
        address = ip.slice(7)
        known = cache.get(address)
      }
      if (known === undefined) {
        address = canonical(ip)
        if (address === undefined) return false
        if (address !== ip) known = cache.get(address)
      }
      if (known !== undefined) return known !== FAILED && known.includes(rule) ? rule.name : false
      if (!closed && !inFlight.has(address) && inFlight.size < maxInFlight)
        start(address, address.includes(':') ? 6 : 4)
      return undefined
    },

    settled(ip) {
      const address = canonical(ip)
      return (address === undefined ? undefined : inFlight.get(address)?.settled) ?? Promise.resolve()
    },

    close() {
      if (closed) return
      closed = true
      for (const pending of [...inFlight.values()]) finish(pending, FAILED)
      try {
        dns.cancel?.()
      } catch {
        // A lookup implementation that cannot cancel leaves its queries to their own timeout.
      }
    },
  }
}

/**
 * Forward-confirmed reverse DNS of `ip`: its PTR names under some rule's domains whose
 * forward lookup gives `ip` back. Resolves the rules confirmed (none when refused);
 * rejects when a lookup fails other than by "no such record".
 */
async function verify(dns: DnsLookups, rules: readonly Rule[], ip: string, family: 4 | 6): Promise<Outcome> {
  let names: string[]
  try {
    names = await dns.reverse(ip)
  } catch (err) {
    if (absent(err)) return NONE
    throw err
  }
  let confirmed: CrawlerRule[] | undefined
  const seen = new Set<string>()
  for (const raw of names.slice(0, MAX_NAMES)) {
    const host = hostName(raw)
    if (seen.has(host)) continue
    seen.add(host)
    // Only names under a crawler's domains are looked up forward: the rest are refused
    // already, and their zones may belong to whoever sent the request.
    const matching = rules.filter((rule) => rule.matches(host))
    if (matching.length === 0) continue
    let addresses: string[]
    try {
      addresses = await dns.resolve(host, family)
    } catch (err) {
      if (absent(err)) continue
      throw err
    }
    if (!addresses.some((a) => canonical(a) === ip)) continue
    confirmed ??= []
    for (const rule of matching) if (!confirmed.includes(rule.rule)) confirmed.push(rule.rule)
  }
  return confirmed ?? NONE
}

/** Whether a lookup's rejection says there is no such record (NXDOMAIN, or the name without that type). */
function absent(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'ENOTFOUND' || code === 'ENODATA'
}

/** A DNS name compared as DNS compares it: case-insensitively, the root's trailing dot dropped. */
function hostName(name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * An address in one spelling per address, so that one cache entry holds it: IPv4-mapped
 * IPv6 as its IPv4, IPv6 in the compact form of RFC 5952. Undefined when it is no address.
 */
function canonical(ip: string): string | undefined {
  try {
    return ipaddr.isValid(ip) ? ipaddr.process(ip).toString() : undefined
  } catch {
    return undefined
  }
}

/** A rule with its domains normalised, and the test of a host name against them. */
interface Rule {
  readonly rule: CrawlerRule
  matches(host: string): boolean
}

/** Checks the rules (names unique, domains present) and prepares their domain tests. */
function checkRules(crawlers: readonly CrawlerRule[]): readonly Rule[] {
  // Checked as unknown: the rules may come from configuration no type checker has seen.
  const list: unknown = crawlers
  if (!Array.isArray(list)) throw new TypeError('crawlers must be an array of rules')
  const names = new Set<string>()
  return (list as readonly (Partial<CrawlerRule> | null | undefined)[]).map((given, i) => {
    const name = given?.name
    if (typeof name !== 'string' || name === '')
      throw new TypeError(`crawlers[${i}].name must be a non-empty string`)
    if (names.has(name)) throw new TypeError(`crawlers[${i}].name "${name}" is not unique`)
    names.add(name)
    if (!(given?.userAgent instanceof RegExp))
      throw new TypeError(`crawlers[${i}].userAgent must be a RegExp`)
    const listed: unknown = given.domains
    if (!Array.isArray(listed) || listed.length === 0)
      throw new TypeError(`crawlers[${i}].domains must list one domain at least`)
    const domains = (listed as readonly unknown[]).map((d, j) => {
      const domain = typeof d === 'string' ? hostName(d.replace(/^\.+/, '')) : ''
      if (domain === '' || domain.includes('..'))
        throw new TypeError(`crawlers[${i}].domains[${j}] must be a domain name`)
      return domain
    })
    const rule = given as CrawlerRule
    return {
      rule,
      // An exact match, or a subdomain: the suffix preceded by a dot, so that
      // evilgooglebot.com is not under googlebot.com.
      matches: (host: string) =>
        domains.some(
          (d) =>
            host === d ||
            (host.length > d.length &&
              host.endsWith(d) &&
              host.charCodeAt(host.length - d.length - 1) === 0x2e),
        ),
    }
  })
}

/**
 * The claim test: one combined pattern with a named group per rule when every rule has
 * the same flags and no pattern of groups of its own that the combination would
 * renumber or repeat; otherwise each rule's pattern, the earliest match winning as in
 * the combined one. Patterns are copied without `g` and `y`, whose `lastIndex` would
 * make a test depend on the one before.
 */
/** The longest user agent a claim is read from: crawlers' are short; a longer one is cut, so no pattern runs long. */
const MAX_AGENT = 512

function claimMatcher(rules: readonly Rule[]): (userAgent: string | undefined) => CrawlerRule | undefined {
  const match = claimMatcherOf(rules)
  return (userAgent) =>
    match(
      userAgent === undefined || userAgent.length <= MAX_AGENT ? userAgent : userAgent.slice(0, MAX_AGENT),
    )
}

function claimMatcherOf(rules: readonly Rule[]): (userAgent: string | undefined) => CrawlerRule | undefined {
  const flagsOf = (r: RegExp): string => r.flags.replace(/[gy]/g, '')
  const patterns = rules.map(({ rule }) => new RegExp(rule.userAgent.source, flagsOf(rule.userAgent)))
  const flags = patterns[0]?.flags ?? ''
  const combinable = patterns.every((p) => p.flags === flags && !/\\[1-9k]|\(\?<(?![=!])/.test(p.source))
  if (patterns.length === 0) return () => undefined

  if (combinable) {
    const combined = new RegExp(patterns.map((p, i) => `(?<r${i}>${p.source})`).join('|'), flags)
    const groups = patterns.map((_, i) => `r${i}`)
    return (userAgent) => {
      if (userAgent === undefined) return undefined
      const match = combined.exec(userAgent)
      if (match === null) return undefined
      const index = groups.findIndex((g) => match.groups?.[g] !== undefined)
      return rules[index]?.rule
    }
  }
  return (userAgent) => {
    if (userAgent === undefined) return undefined
    let best: CrawlerRule | undefined
    let at = Infinity
    for (let i = 0; i < patterns.length; i++) {
      const match = (patterns[i] as RegExp).exec(userAgent)
      if (match !== null && match.index < at) {
        at = match.index
        best = rules[i]?.rule
      }
    }
    return best
  }
}

/** The three TTLs from one number or their object, defaults filled in. */
function ttls(option: number | CrawlerTtl | undefined): Required<CrawlerTtl> {
  if (typeof option === 'number') {
    const all = positive(option, 0, 'ttlMs')
    return { verified: all, refused: all, failed: all }
  }
  return {
    verified: positive(option?.verified, 24 * 3600_000, 'ttlMs.verified'),
    refused: positive(option?.refused, 3600_000, 'ttlMs.refused'),
    failed: positive(option?.failed, 60_000, 'ttlMs.failed'),
  }
}

/** A whole number of ms (lru-cache counts in whole ms, and takes 0 for "forever"), at least 1. */
function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1)
    throw new RangeError(`${what} must be a finite number of ms, at least 1 (received ${String(value)})`)
  return Math.floor(value)
}

/** A count, at least 1. */
function whole(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < 1)
    throw new RangeError(`${what} must be an integer, at least 1 (received ${String(value)})`)
  return value
}
