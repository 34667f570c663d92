/**
 * The aggregate detector of the anomaly engine: what no per-client scorer can see. Credential
 * stuffing spread over hundreds of addresses at a few attempts each stays under every per-client
 * limit, and so does a flood from many clients; both show only in the sum over a route.
 *
 * Per route, requests are counted in buckets of `bucketMs`: requests, auth failures, new clients,
 * and two small bitmaps (linear counting, Whang, Vander-Zanden & Taylor 1990) that estimate how
 * many distinct clients failed, and how many distinct clients asked at all. When a bucket closes
 * (lazily, at the route's first request of a later bucket: no timers), two statistics are
 * standardised against the route's own baseline and fed to a one-sided CUSUM each (Page 1954):
 *
 * - **failing clients**: the distinct failing clients of the bucket against what the route's
 *   failure rate predicts for this bucket's requests. A rate and not a count, so that ten times
 *   the logins with the usual share of typos is not an attack; distinct clients and not failures,
 *   so that one user mistyping three times is one event, and a single address hammering the
 *   route (the per-client scorer's case) barely moves it.
 * - **requests not explained by clients**: the requests of the bucket against what its distinct
 *   clients make at the route's usual intensity. A marketing burst brings ten times the visitors
 *   and ten times the requests, at the usual intensity; a flood is many clients hammering. A
 *   rise in new clients alone cannot tell the two apart, so new clients are counted and reported
 *   but are not what decides.
 *
 * The baselines are exponentially weighted (the EWMA of Lucas & Saccucci 1990, used here as the
 * estimate of the in-control level rather than as the chart itself): a failure rate and an
 * intensity, each a ratio of two EWMAs (weighted by traffic, so a bucket with one request weighs
 * little), and a dispersion factor φ per statistic, the EWMA of the squared standardised residual,
 * which scales the variance a counting model gives (binomial for the failing clients, Poisson
 * for the requests) up to what the route actually shows. The variance never falls below one
 * client's worth, so a route that never fails does not alarm on two typos. Residuals are clipped
 * at 3σ before they are learned, a statistic past half its decision interval is learned at a
 * quarter of the weight, and nothing is learned while a campaign is active, so an attack does not
 * become the baseline (a lasting change still does, slowly, if it never becomes a campaign).
 *
 * The CUSUM is S ← min(h, max(0, S + z − k)) in baseline standard deviations: k (`drift`) is
 * the allowance, h (`threshold`) the decision interval. It alarms at S = h, and is held there
 * while buckets keep exceeding the allowance, so a campaign's signal stops within a bucket or
 * two of the attack's end instead of decaying for minutes. An alarm starts a campaign only where
 * absolute floors are met over the detection window (`windowMs`): for stuffing, `minFailures`
 * failures and `minClients` distinct failing clients (the union of the window's bitmaps); for a
 * flood, `minClients` distinct clients in the bucket, at least twice the baseline's requests and
 * twice its requests per client. The floors are what keep a quiet route quiet: a statistic on a
 * few events a minute crosses h by chance often. On a busy route, whose floors are always met,
 * h decides alone. With k = 0.5 and h = 5 the in-control average run length of a normal CUSUM is
 * about 940 buckets (Siegmund's approximation), a false start every two or three hours with 10 s
 * buckets — and seven in a simulated day of logins at 20 req/s with 5% typos. Hence h = 8 by
 * default: about 19,000 buckets (two days), none in that day nor in 12 hours at 100 req/s, and a
 * one-σ shift still found in about 16 buckets.
 *
 * The same detector also runs per network (`scope: 'network'`, the key a /24 or /48 instead of a
 * route): an attack that a busy route's baseline dilutes — a few hundred failing addresses from
 * one data centre among thousands of users — stands out against its network's own baseline,
 * which is near zero. There a third statistic decides too: **new clients**, against the
 * network's new-client rate (Poisson, with its own φ and CUSUM). Its campaign is an
 * **address rotation** — an attacker cycling through a network's addresses so that no address
 * is seen twice — and it needs, besides the alarm (or, on a network still learning, the doubled
 * floor alone), `minClients` new clients in the window making at most 1.5 requests each, most
 * of them not failing to log in (else it is stuffing, found as such): a browser fetches a page
 * and its assets, a poller returns, a rotating attacker does neither. On
 * a route new clients do not decide (a marketing burst brings them by the thousand); they are
 * counted and reported. A network's campaign spans routes: its participants are its failing
 * clients (stuffing), its hammering ones (flood), or every client it brings while it lasts
 * (rotation: the clients seen before it began are not).
 *
 * A campaign names the route, its kind, its failing clients and their top prefixes (/24 or /48,
 * Space-Saving by Metwally, Agrawal & El Abbadi 2005). Its participants are, for stuffing, the
 * clients that failed on the route in the buckets of the window that showed the excess or while
 * it is active, less those pardoned by a success (once each); for a flood, those that made at
 * least three times the usual requests per client in one bucket while it is active. They are a
 * bounded LRU set. A campaign ends `quietMs` after the last bucket that carried its signal, on
 * the first `record` or `active` call that sees it.
 *
 * Cost: `record` hashes the client key once, sets a bit or two and counts; it allocates nothing
 * unless a campaign is active on the route (a failure's client is kept in an array that grows to
 * the window's failures, then is reused). Closing a bucket is a fixed number of word operations.
 * Memory is bounded: `maxRoutes` routes or networks (LRU) of about 1.5 KB each, and per active campaign
 * `maxParticipants` keys and `maxPrefixes` prefixes.
 */
import ipaddr from 'ipaddr.js'
import { z } from 'zod'
import { hash32, linearCount, popcount32 } from '../kernel/hash.js'
import { strictAddress, strictCidr } from '../client/options.js'

/** Upper bound on the buckets of the detection window (the bitmaps of a route grow with it). */
const MAX_WINDOW_BUCKETS = 64
/** Bits of a bucket's failing-clients bitmap: estimates stay within a few percent up to ~1,500. */
const FAIL_BITS = 512
const FAIL_WORDS = FAIL_BITS / 32
/** Bits of a bucket's all-clients bitmap, which is sampled by hash on busy routes (below). */
const SEEN_BITS = 1024
const SEEN_WORDS = SEEN_BITS / 32
/** Sampled clients per bucket aimed at: a quarter of the bitmap, where linear counting is precise. */
const SEEN_TARGET = SEEN_BITS / 4
/** Failing clients remembered over the window, to name the participants when a campaign starts. */
const RECENT_CAP = 1024
/** Empty buckets closed one by one after a silence; past that the route's window is simply cleared. */
const GAP_CAP = 256
/** Residuals are clipped at this many σ before the baselines learn them. */
const CLIP = 3
/** Upper bound on the dispersion factors. */
const PHI_MAX = 100
/** A flood's alarming bucket has at least this many times the baseline's requests… */
const FLOOD_VOLUME = 2
/** …and this many times its requests per client. */
const FLOOD_INTENSITY = 2
/** A flood participant makes this many times the usual requests per client in one bucket (and at least 4). */
const FLOOD_HAMMER = 3
/**
 * Address rotation: over the window, the network's requests are at most this many per new
 * client. A browser asks for a page and its assets, a poller comes back; an attacker who
 * rotates addresses to stay under per-address limits uses each one once or twice.
 */
const ROTATION_USES = 1.5

/**
 * Options of the campaign detector; every field has a default.
 *
 * @example
 * createCampaignDetector({ threshold: 8, minFailures: 50 })
 */
export const campaignSchema = z
  .strictObject({
    /** Length of a counting bucket, in milliseconds: statistics are evaluated once per bucket. */
    bucketMs: z.int().min(100).max(3_600_000).default(10_000),
    /** The detection window the floors are counted over, in milliseconds (at most 64 buckets). */
    windowMs: z.int().min(100).max(86_400_000).default(60_000),
    /** A stuffing campaign needs at least this many auth failures (401/403) on the route in the window. */
    minFailures: z.int().min(1).max(1_000_000).default(30),
    /** …and this many distinct failing clients in the window; a flood this many distinct clients in a bucket. */
    minClients: z.int().min(1).max(1_000_000).default(20),
    /** CUSUM decision interval h, in baseline standard deviations. */
    threshold: z.number().gt(0).max(1000).default(8),
    /** CUSUM allowance k, in baseline standard deviations (half the shift it is tuned to). */
    drift: z.number().min(0).max(100).default(0.5),
    /** EWMA weight of each bucket in the baselines (1/alpha buckets is the baseline's memory). */
    alpha: z.number().gt(0).max(1).default(0.05),
    /**
     * For this long after the detector's first request no client counts as new, in
     * milliseconds: to a process that just started every client is, and a network of pollers
     * seen for the first time would look like one rotating its addresses.
     */
    settleMs: z.int().min(0).max(86_400_000).default(300_000),
    /** A campaign ends after this long without its signal, in milliseconds. */
    quietMs: z.int().min(0).max(86_400_000).default(120_000),
    /** Routes tracked at most (least recently used evicted, ending its campaign). */
    maxRoutes: z.int().min(1).max(1_000_000).default(1000),
    /**
     * Networks (/24, /48) tracked at most by the engine's second detector, which counts by where
     * requests come from instead of what they ask for (least recently used evicted); `false`
     * turns it off. A detector built directly reads `maxRoutes` for either scope.
     */
    networks: z.union([z.literal(false), z.int().min(1).max(1_000_000)]).default(4096),
    /** Prefixes kept per campaign: the top ones by count. */
    maxPrefixes: z.int().min(1).max(4096).default(64),
    /** Participants kept per campaign (least recently active forgotten first). */
    maxParticipants: z.int().min(1).max(10_000_000).default(10_000),
  })
  .refine((o) => o.windowMs >= o.bucketMs, {
    message: 'windowMs must be at least bucketMs',
    path: ['windowMs'],
  })
  .refine((o) => Math.ceil(o.windowMs / o.bucketMs) <= MAX_WINDOW_BUCKETS, {
    message: `windowMs may span at most ${MAX_WINDOW_BUCKETS} buckets`,
    path: ['windowMs'],
  })

/**
 * Options as written by the user (all optional).
 *
 * @example
 * const options: CampaignOptions = { bucketMs: 5000, windowMs: 30_000, quietMs: 60_000 }
 */
export type CampaignOptions = z.input<typeof campaignSchema>

/**
 * What a campaign is: auth failures spread over many clients, or requests beyond what many
 * clients usually make.
 *
 * @example
 * const kind: CampaignKind = campaign.kind // 'credential-stuffing'
 */
export type CampaignKind = 'credential-stuffing' | 'distributed-flood' | 'address-rotation'

/**
 * What a detector counts by: a route template (what is attacked), or a /24 or /48 network (where
 * it comes from).
 *
 * @example
 * const scope: CampaignScope = campaign.scope // 'network'
 */
export type CampaignScope = 'route' | 'network'

/**
 * A detected campaign. Counts and `lastSeen` keep moving while it is active.
 *
 * @example
 * campaign.id // 'credential-stuffing@POST /login#1'
 * campaign.prefixes[0] // ['185.100.0.0/24', 5]
 */
export interface Campaign {
  /** Names the campaign in events: `kind@route#n`, n counting the detector's campaigns from 1. */
  readonly id: string
  readonly kind: CampaignKind
  readonly scope: CampaignScope
  /** The route template it targets; `*` for a network's campaign, which spans the routes. */
  readonly route: string
  /** The /24 or /48 a network's campaign comes from (`undefined` for a route's). */
  readonly network: string | undefined
  /** When it was detected (the `now` of the call that closed the alarming bucket). */
  readonly startedAt: number
  /** The last request of the last bucket that carried its signal. */
  lastSeen: number
  /** Auth failures on the route in the window that set it off and since. */
  failures: number
  /** Participants seen (a client forgotten by the LRU and seen again counts twice). */
  clients: number
  /** New clients on the route in the window that set it off and since. */
  newClients: number
  /** The top prefixes (/24, /48) by failures (stuffing) or by participants' requests (flood), largest first. */
  readonly prefixes: ReadonlyArray<readonly [prefix: string, failures: number]>
  /** False once it has ended. */
  active: boolean
}

/**
 * The detector; pure, driven by the `now` each call passes.
 *
 * @example
 * const detector: CampaignDetector = createCampaignDetector()
 * detector.active(Date.now()) // []
 */
export interface CampaignDetector {
  /**
   * One finished request. `key` the route template (or, for a detector of networks, the client's
   * network: its `prefix`), `client` the client key, `prefix` its /24 (IPv4) or /48 (IPv6) as a
   * string (`prefixOf`), `failed` an auth failure (401/403), `newClient` first time this client
   * was seen by the engine. O(1) amortised; allocation-free unless a campaign is active on the
   * key. Returns the campaign active on the key after this request, if any. `now` is the
   * caller's clock in milliseconds (a virtual one in tests). `clientHash` is `hash32(client)`,
   * which a caller that keeps it passes (the engine's two detectors hash each client once).
   */
  record(
    key: string,
    client: string,
    prefix: string,
    failed: boolean,
    newClient: boolean,
    now: number,
    clientHash?: number,
  ): Campaign | undefined
  /** The active campaign on the key (route or network) that the client takes part in, if any: the engine blocks or throttles those. */
  participant(key: string, client: string): Campaign | undefined
  /** The active campaigns, after ending those quiet for `quietMs` at `now`. */
  active(now: number): Campaign[]
  /** What the detector holds: routes (or networks) tracked, active campaigns and their participants. */
  footprint(): { routes: number; campaigns: number; participants: number }
}

/**
 * Callbacks of the detector. Each is caught: what one throws goes to `onError`, or nowhere.
 *
 * @example
 * const callbacks: CampaignCallbacks = { onStart: (c) => log.warn({ campaign: c.id }, 'campaign started') }
 */
export interface CampaignCallbacks {
  /** A campaign was detected. */
  onStart?: (campaign: Campaign) => void
  /** A campaign ended (quiet for `quietMs`, or its route evicted). */
  onEnd?: (campaign: Campaign) => void
  /** `onStart` or `onEnd` threw. */
  onError?: (error: unknown, callback: 'onStart' | 'onEnd') => void
}

/**
 * The /24 (IPv4) or /48 (IPv6) an address belongs to, as `a.b.c.0/24` or `x:y:z::/48`; an
 * IPv4-mapped IPv6 address counts as IPv4. A client key that is already a prefix (an IPv6 /64)
 * is widened to its /48; a key that is no address is its own prefix.
 *
 * @example
 * prefixOf('203.0.113.77') // '203.0.113.0/24'
 * prefixOf('::ffff:203.0.113.77') // '203.0.113.0/24'
 * prefixOf('2001:db8:1:2::7') // '2001:db8:1::/48'
 * prefixOf('2001:db8:1:2::/64') // '2001:db8:1::/48'
 */
export function prefixOf(ip: string): string {
  const text = ip.trim()
  let addr: ipaddr.IPv4 | ipaddr.IPv6 | undefined
  if (text.includes('/')) {
    const cidr = strictCidr(text)
    if (cidr === undefined) return ip
    const [net, bits] = cidr
    // A prefix wider than /24 or /48 cannot be narrowed: keep it as it came, normalised.
    if (bits < (net.kind() === 'ipv4' ? 24 : 48)) return `${net.toString()}/${bits}`
    addr = net
  } else addr = strictAddress(text)
  if (addr === undefined) return ip
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress())
    addr = (addr as ipaddr.IPv6).toIPv4Address()
  if (addr.kind() === 'ipv4') {
    const [a, b, c] = (addr as ipaddr.IPv4).octets
    return `${a}.${b}.${c}.0/24`
  }
  const [p0, p1, p2] = (addr as ipaddr.IPv6).parts
  return `${new ipaddr.IPv6([p0 as number, p1 as number, p2 as number, 0, 0, 0, 0, 0]).toString()}/48`
}

/** A flood participant's requests in its current bucket. */
class Tally {
  constructor(
    public bucket: number,
    public count: number,
    public flagged: boolean,
  ) {}
}

/** Stuffing participants have nothing to count: shared markers of where they stand. */
const FAILED = new Tally(0, 0, true)
/** Failed, then succeeded: taken for a user who mistyped (once per campaign). */
const PARDONED = new Tally(0, 0, false)
/** Failed again after its pardon: a participant for good. */
const FAILED_AGAIN = new Tally(0, 0, true)
/** Brought by a network rotating its addresses. */
const ROTATED = new Tally(0, 0, true)

/** A campaign and its bounded participants and prefixes. */
class CampaignRecord implements Campaign {
  lastSeen: number
  failures = 0
  clients = 0
  newClients = 0
  active = true
  readonly #members = new Map<string, Tally>()
  readonly #prefixes = new Map<string, number>()
  readonly #hammerBar: number
  readonly #maxMembers: number
  readonly #maxPrefixes: number

  readonly route: string
  readonly network: string | undefined

  constructor(
    readonly id: string,
    readonly kind: CampaignKind,
    readonly scope: CampaignScope,
    key: string,
    readonly startedAt: number,
    lastSeen: number,
    hammerBar: number,
    maxMembers: number,
    maxPrefixes: number,
  ) {
    this.route = scope === 'route' ? key : '*'
    this.network = scope === 'network' ? key : undefined
    this.lastSeen = lastSeen
    this.#hammerBar = hammerBar
    this.#maxMembers = maxMembers
    this.#maxPrefixes = maxPrefixes
  }

  get prefixes(): ReadonlyArray<readonly [prefix: string, failures: number]> {
    return [...this.#prefixes].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
  }

  get size(): number {
    return this.#members.size
  }

  includes(client: string): boolean {
    const m = this.#members.get(client)
    return m !== undefined && m.flagged
  }

  /** A failure by `client`: a participant (stuffing), kept most recent in the LRU. */
  failed(client: string, prefix: string): void {
    const m = this.#members.get(client)
    if (m === undefined) {
      this.#admit(client, FAILED)
      this.clients++
    } else {
      this.#members.delete(client)
      this.#members.set(client, m === PARDONED ? FAILED_AGAIN : m)
    }
    this.#count(prefix)
  }

  /**
   * A success by `client` (stuffing). A user who mistyped fails, then gets in: the first success
   * after a failure pardons the client, so the typos of the campaign's minutes do not throttle
   * their authors. Once only: an attacker who logs into an account of its own between attempts
   * gains one unthrottled attempt per address, no more.
   */
  succeeded(client: string): void {
    if (this.#members.get(client) === FAILED) this.#members.set(client, PARDONED)
  }

  /** A request by `client` in `bucket` (flood): a participant once it hammers. */
  requested(client: string, prefix: string, bucket: number): void {
    let m = this.#members.get(client)
    if (m === undefined) this.#admit(client, (m = new Tally(bucket, 0, false)))
    else if (m.bucket !== bucket) {
      // Once per bucket per client: refresh its place in the LRU and start its count again.
      this.#members.delete(client)
      this.#members.set(client, m)
      m.bucket = bucket
      m.count = 0
    }
    if (++m.count >= this.#hammerBar && !m.flagged) {
      m.flagged = true
      this.clients++
    }
    if (m.flagged) this.#count(prefix)
  }

  /** A client the network brought while it rotates (rotation): a participant at once. */
  rotated(client: string, prefix: string): void {
    if (this.#members.has(client)) return
    this.#admit(client, ROTATED)
    this.clients++
    this.#count(prefix)
  }

  #admit(client: string, m: Tally): void {
    if (this.#members.size >= this.#maxMembers) {
      const oldest = this.#members.keys().next().value
      if (oldest !== undefined) this.#members.delete(oldest)
    }
    this.#members.set(client, m)
  }

  /** Space-Saving: a new prefix in a full table takes the place of the smallest, and its count plus one. */
  #count(prefix: string): void {
    const have = this.#prefixes.get(prefix)
    if (have !== undefined) {
      this.#prefixes.set(prefix, have + 1)
      return
    }
    if (this.#prefixes.size < this.#maxPrefixes) {
      this.#prefixes.set(prefix, 1)
      return
    }
    let minKey = ''
    let min = Infinity
    for (const [k, v] of this.#prefixes)
      if (v < min) {
        min = v
        minKey = k
      }
    this.#prefixes.delete(minKey)
    this.#prefixes.set(prefix, min + 1)
  }
}

/** One route: the open bucket, the window, the baselines and the two CUSUMs. */
class RouteState {
  /** Index of the open bucket (floor(now / bucketMs)). */
  bucket: number
  /** The last bucket it was moved to the LRU's recent end in. */
  used: number
  requests = 0
  lastAt = 0
  /** Sampling level of the all-clients bitmap: a client is counted when its hash's low `level` bits are 0. */
  level = 0
  /** Buckets with traffic learned so far (warm-up). */
  warm = 0
  // Baselines: EWMAs of per-bucket values; the failure rate is failing/requestedF, the intensity
  // requestedSeen/seen.
  failing = 0
  requestedF = 0
  requestedSeen = 0
  seen = 0
  phiF = 1
  phiV = 1
  meanRequests = 0
  // New clients per bucket (N): their EWMA and dispersion.
  newMean = 0
  phiN = 1
  // The CUSUMs of failing clients (F), of requests beyond what the clients explain (V), of new clients (N).
  cusumF = 0
  cusumV = 0
  cusumN = 0
  campaign: CampaignRecord | undefined = undefined
  /**
   * One array per route: the failing-clients bitmap of each bucket of the window, the
   * all-clients bitmap of the open bucket, then per bucket of the window its failures, its new
   * clients, whether its failing clients exceeded the allowance (1) or not (0), how many
   * pairs of `recent` are its, and its requests.
   */
  readonly words: Uint32Array
  /**
   * Failing clients as client, prefix pairs, oldest bucket first: those of the open bucket, and
   * those of the window's buckets that showed an excess (the others' are dropped when they close).
   */
  readonly recent: string[] = []

  constructor(
    readonly key: string,
    bucket: number,
    readonly window: number,
  ) {
    this.bucket = bucket
    this.used = bucket
    this.words = new Uint32Array(window * FAIL_WORDS + SEEN_WORDS + 5 * window)
  }
}

/**
 * Create the aggregate detector. Pure: no timers, no I/O; every call passes its `now`.
 *
 * @example
 * const campaigns = createCampaignDetector({ onStart: (c) => log.warn({ campaign: c.id }, 'campaign') })
 * // After each request:
 * const c = campaigns.record('POST /login', key, prefixOf(ip), status === 401 || status === 403, isNew, Date.now())
 * // Before the next one:
 * if (campaigns.participant('POST /login', key)) throttle()
 */
export function createCampaignDetector(
  options: CampaignOptions & CampaignCallbacks & { scope?: CampaignScope } = {},
): CampaignDetector {
  const { onStart, onEnd, onError, scope = 'route', ...rest } = options
  const cfg = campaignSchema.parse(rest)
  const { bucketMs, threshold: h, drift: k, alpha, quietMs, maxRoutes, minFailures, minClients } = cfg
  const W = Math.ceil(cfg.windowMs / bucketMs)
  const SEEN_AT = W * FAIL_WORDS
  const FAILURES_AT = SEEN_AT + SEEN_WORDS
  const NEW_AT = FAILURES_AT + W
  const EXCESS_AT = NEW_AT + W
  const RECENT_AT = EXCESS_AT + W
  const REQUESTS_AT = RECENT_AT + W
  // Rates and intensities are learned from the first bucket; the dispersions from `warmup` on,
  // once the levels they are measured against have settled; alarms from twice that.
  const warmup = Math.ceil(1 / alpha)
  const routes = new Map<string, RouteState>()
  const activeRoutes: RouteState[] = []
  let sweptBucket = -Infinity
  let sequence = 0
  let settledAt: number | undefined

  const call = (name: 'onStart' | 'onEnd', fn: ((c: Campaign) => void) | undefined, c: Campaign): void => {
    if (fn === undefined) return
    try {
      fn(c)
    } catch (error) {
      try {
        onError?.(error, name)
      } catch {
        // The error handler failed too: the request path must not.
      }
    }
  }

  const slotOf = (bucket: number): number => ((bucket % W) + W) % W

  /** Start a new open bucket: clear its slot of the window. */
  const open = (s: RouteState): void => {
    const slot = slotOf(s.bucket)
    s.words.fill(0, slot * FAIL_WORDS, (slot + 1) * FAIL_WORDS)
    s.words[FAILURES_AT + slot] = 0
    s.words[NEW_AT + slot] = 0
    s.words[EXCESS_AT + slot] = 0
    s.words[REQUESTS_AT + slot] = 0
    // The slot's previous bucket left the window: its failing clients are the oldest pairs.
    const stale = 2 * (s.words[RECENT_AT + slot] as number)
    if (stale > 0) {
      s.recent.copyWithin(0, stale)
      s.recent.length -= stale
      s.words[RECENT_AT + slot] = 0
    }
    s.requests = 0
  }

  const start = (s: RouteState, kind: CampaignKind, intensity: number, now: number): void => {
    const c = new CampaignRecord(
      `${kind}@${s.key}#${++sequence}`,
      kind,
      scope,
      s.key,
      now,
      s.lastAt,
      Math.max(4, Math.ceil(FLOOD_HAMMER * intensity)),
      cfg.maxParticipants,
      cfg.maxPrefixes,
    )
    for (let slot = 0; slot < W; slot++) {
      c.failures += s.words[FAILURES_AT + slot] as number
      c.newClients += s.words[NEW_AT + slot] as number
      s.words[RECENT_AT + slot] = 0
    }
    // The failing clients of the window's buckets that showed the excess set the campaign off:
    // they are its first participants. Those of the other buckets were the route's usual typos.
    if (kind === 'credential-stuffing')
      for (let i = 0; i < s.recent.length; i += 2) c.failed(s.recent[i] as string, s.recent[i + 1] as string)
    s.recent.length = 0
    s.campaign = c
    activeRoutes.push(s)
    call('onStart', onStart, c)
  }

  const end = (s: RouteState): void => {
    const c = s.campaign
    if (c === undefined) return
    c.active = false
    s.campaign = undefined
    const i = activeRoutes.indexOf(s)
    if (i >= 0) activeRoutes.splice(i, 1)
    call('onEnd', onEnd, c)
  }

  /** Evaluate the open bucket of `s`: both statistics, the alarm, the campaign's signal, the baselines. */
  const close = (s: RouteState, now: number): void => {
    const n = s.requests
    const slot = slotOf(s.bucket)
    let failingSet = 0
    for (let i = slot * FAIL_WORDS; i < (slot + 1) * FAIL_WORDS; i++)
      failingSet += popcount32(s.words[i] as number)
    let seenSet = 0
    for (let i = SEEN_AT; i < SEEN_AT + SEEN_WORDS; i++) {
      seenSet += popcount32(s.words[i] as number)
      s.words[i] = 0
    }
    const x = failingSet === 0 ? 0 : linearCount(failingSet, FAIL_BITS)
    const d = seenSet === 0 ? 0 : linearCount(seenSet, SEEN_BITS) * 2 ** s.level
    const ready = s.warm >= 2 * warmup
    const rate = s.requestedF > 0 ? Math.min(1, s.failing / s.requestedF) : 0
    const intensity = s.seen > 0 ? s.requestedSeen / s.seen : 1

    // Standardised excesses. An empty bucket observes nothing: z = 0, and the CUSUMs drift down.
    let zF = 0
    let zV = 0
    let expF = 0
    let baseF = 1
    let expV = 0
    let baseV = 1
    const fresh = s.words[NEW_AT + slot] as number
    const expN = s.newMean
    const baseN = Math.max(1, expN)
    let zN = 0
    if (n > 0) {
      // Failing clients against the binomial count the failure rate predicts for n requests.
      expF = rate * n
      baseF = Math.max(1, expF * (1 - rate))
      zF = (x - expF) / Math.sqrt(baseF * s.phiF)
      // Requests against the Poisson count d clients make at the usual intensity.
      expV = intensity * d
      baseV = Math.max(1, expV)
      zV = (n - expV) / Math.sqrt(baseV * s.phiV)
      // New clients against the Poisson count of the usual rate.
      zN = (fresh - expN) / Math.sqrt(baseN * s.phiN)
    }
    if (zF > k) s.words[EXCESS_AT + slot] = 1
    else {
      // The usual failures: forget who made them (they are the last pairs).
      s.recent.length -= 2 * (s.words[RECENT_AT + slot] as number)
      s.words[RECENT_AT + slot] = 0
    }
    if (ready) {
      s.cusumF = Math.min(h, Math.max(0, s.cusumF + zF - k))
      s.cusumV = Math.min(h, Math.max(0, s.cusumV + zV - k))
      s.cusumN = Math.min(h, Math.max(0, s.cusumN + zN - k))
    }

    const c = s.campaign
    if (c !== undefined) {
      // The signal goes on while a CUSUM stays at h — or, on a key that had no baseline yet (whose
      // CUSUMs do not run, and whose young levels may have learned the attack's first bucket),
      // while the bucket keeps the pace of the floor: a window's share of its failing clients
      // (stuffing) or its new clients (rotation).
      const signal = ready
        ? s.cusumF >= h || s.cusumV >= h || (c.kind === 'address-rotation' && s.cusumN >= h)
        : (c.kind === 'address-rotation' ? fresh : x) >= minClients / W
      if (n > 0 && signal) c.lastSeen = s.lastAt
      return // nothing is learned from a route under attack
    }
    // A route still learning its baseline (a new login page, a process just started) has no
    // CUSUM yet: there the floors alone decide, doubled — twice the failing clients a
    // campaign needs, within one window, is not a few users mistyping — and half the window's
    // requests must fail: a busy login page's typos meet any floor at start.
    const young = !ready && n > 0
    if ((ready && s.cusumF >= h) || young) {
      let failures = 0
      let requests = 0
      for (let i = 0; i < W; i++) {
        failures += s.words[FAILURES_AT + i] as number
        requests += s.words[REQUESTS_AT + i] as number
      }
      if (young ? failures >= 2 * minFailures && 2 * failures >= requests : failures >= minFailures) {
        // Distinct failing clients over the window: the union of its buckets' bitmaps.
        let set = 0
        for (let w = 0; w < FAIL_WORDS; w++) {
          let word = 0
          for (let b = 0; b < W; b++) word |= s.words[b * FAIL_WORDS + w] as number
          set += popcount32(word)
        }
        if (linearCount(set, FAIL_BITS) >= (young ? 2 * minClients : minClients)) {
          start(s, 'credential-stuffing', intensity, now)
          return
        }
      }
    }
    if (
      ready &&
      s.cusumV >= h &&
      d >= minClients &&
      n >= FLOOD_VOLUME * s.meanRequests &&
      n >= FLOOD_INTENSITY * intensity * d
    ) {
      start(s, 'distributed-flood', intensity, now)
      return
    }
    if (scope === 'network' && ((ready && s.cusumN >= h) || young)) {
      let newClients = 0
      let requests = 0
      let failures = 0
      for (let i = 0; i < W; i++) {
        newClients += s.words[NEW_AT + i] as number
        requests += s.words[REQUESTS_AT + i] as number
        failures += s.words[FAILURES_AT + i] as number
      }
      // New clients that mostly fail to log in are stuffing's, which catches them: not a rotation.
      if (
        newClients >= (young ? 2 * minClients : minClients) &&
        requests <= ROTATION_USES * newClients &&
        2 * failures < newClients
      ) {
        start(s, 'address-rotation', intensity, now)
        return
      }
    }

    // Learn. Early buckets weigh 1/(t+1) (a plain mean), later ones alpha; a quarter of that
    // while a statistic is past half its decision interval, so that an attack building up
    // slowly is not learned before it alarms, while a lasting change is learned in the end.
    const early = Math.max(alpha, 1 / (s.warm + 1))
    const aF = ready && s.cusumF >= h / 2 ? early / 4 : early
    const aV = ready && s.cusumV >= h / 2 ? early / 4 : early
    const aN = ready && s.cusumN >= h / 2 ? early / 4 : early
    const meanCap = s.meanRequests + CLIP * Math.sqrt(Math.max(1, s.meanRequests))
    s.meanRequests += aV * ((ready ? Math.min(n, meanCap) : n) - s.meanRequests)
    s.level = Math.min(20, Math.max(0, Math.ceil(Math.log2(Math.max(1, s.meanRequests) / SEEN_TARGET))))
    if (n === 0) return
    const sdF = Math.sqrt(baseF * s.phiF)
    const sdV = Math.sqrt(baseV * s.phiV)
    const xc = ready ? Math.min(x, expF + CLIP * sdF) : x
    const nc = ready ? Math.min(n, expV + CLIP * sdV) : n
    const sdN = Math.sqrt(baseN * s.phiN)
    s.newMean += aN * ((ready ? Math.min(fresh, expN + CLIP * sdN) : fresh) - s.newMean)
    s.failing += aF * (xc - s.failing)
    s.requestedF += aF * (n - s.requestedF)
    s.requestedSeen += aV * (nc - s.requestedSeen)
    s.seen += aV * (d - s.seen)
    if (s.warm >= warmup) {
      const uF = Math.min(((x - expF) * (x - expF)) / baseF, CLIP * CLIP * s.phiF)
      const uV = Math.min(((n - expV) * (n - expV)) / baseV, CLIP * CLIP * s.phiV)
      s.phiF = Math.min(PHI_MAX, Math.max(1, s.phiF + (aF === early ? alpha : alpha / 4) * (uF - s.phiF)))
      s.phiV = Math.min(PHI_MAX, Math.max(1, s.phiV + (aV === early ? alpha : alpha / 4) * (uV - s.phiV)))
      const uN = Math.min(((fresh - expN) * (fresh - expN)) / baseN, CLIP * CLIP * s.phiN)
      s.phiN = Math.min(PHI_MAX, Math.max(1, s.phiN + (aN === early ? alpha : alpha / 4) * (uN - s.phiN)))
    }
    s.warm++
  }

  /** Close every bucket of `s` before `bucket`, then end its campaign if it has been quiet. */
  const advance = (s: RouteState, bucket: number, now: number): void => {
    let steps = 0
    while (s.bucket < bucket) {
      close(s, now)
      s.bucket++
      open(s)
      if (++steps >= GAP_CAP && s.bucket < bucket) {
        // A long silence: the window is empty by now, and the CUSUMs have drifted to 0.
        s.bucket = bucket
        for (let b = 0; b < W; b++) s.words.fill(0, b * FAIL_WORDS, (b + 1) * FAIL_WORDS)
        s.words.fill(0, FAILURES_AT)
        s.recent.length = 0
        s.cusumF = 0
        s.cusumV = 0
        s.cusumN = 0
      }
    }
    if (s.campaign !== undefined && now - s.campaign.lastSeen >= quietMs) end(s)
  }

  /** Bring every route with an active campaign up to `bucket`, ending the quiet ones. */
  const sweep = (bucket: number, now: number, except: RouteState | undefined): void => {
    for (let i = activeRoutes.length - 1; i >= 0; i--) {
      const s = activeRoutes[i] as RouteState
      if (s !== except) advance(s, bucket, now)
    }
  }

  return {
    record(route, client, prefix, failed, newClient, now, clientHash) {
      settledAt ??= now + cfg.settleMs
      if (now < settledAt) newClient = false
      const bucket = Math.floor(now / bucketMs)
      let s = routes.get(route)
      if (s === undefined) {
        if (routes.size >= maxRoutes) {
          const oldest = routes.keys().next().value as string
          const evicted = routes.get(oldest) as RouteState
          routes.delete(oldest)
          end(evicted)
        }
        s = new RouteState(route, bucket, W)
        routes.set(route, s)
      } else {
        if (bucket > s.bucket) advance(s, bucket, now)
        else if (s.campaign !== undefined && now - s.campaign.lastSeen >= quietMs) end(s)
        // Least recently used, at bucket granularity: one re-insertion per route per bucket (a
        // sweep may have brought its bucket up to date already).
        if (s.used < bucket) {
          s.used = bucket
          routes.delete(route)
          routes.set(route, s)
        }
      }
      if (bucket > sweptBucket) {
        sweptBucket = bucket
        if (activeRoutes.length > 0) sweep(bucket, now, s)
      }

      // Count into the open bucket (a request from a clock behind the bucket counts there too).
      const slot = slotOf(s.bucket)
      const hash = clientHash ?? hash32(client)
      s.requests++
      s.words[REQUESTS_AT + slot] = (s.words[REQUESTS_AT + slot] as number) + 1
      s.lastAt = now
      if ((hash & ((1 << s.level) - 1)) === 0) {
        const bit = hash >>> 22 // top 10 bits: 1024 positions
        s.words[SEEN_AT + (bit >>> 5)] = (s.words[SEEN_AT + (bit >>> 5)] as number) | (1 << (bit & 31))
      }
      if (newClient) s.words[NEW_AT + slot] = (s.words[NEW_AT + slot] as number) + 1
      const c = s.campaign
      if (failed) {
        s.words[FAILURES_AT + slot] = (s.words[FAILURES_AT + slot] as number) + 1
        const bit = hash >>> 23 // top 9 bits: 512 positions
        const at = slot * FAIL_WORDS + (bit >>> 5)
        s.words[at] = (s.words[at] as number) | (1 << (bit & 31))
        if (c === undefined) {
          if (s.recent.length < 2 * RECENT_CAP) {
            s.recent.push(client, prefix)
            s.words[RECENT_AT + slot] = (s.words[RECENT_AT + slot] as number) + 1
          }
        }
      }
      if (c === undefined) return undefined
      if (failed) c.failures++
      if (newClient) c.newClients++
      if (c.kind === 'credential-stuffing') {
        if (failed) c.failed(client, prefix)
        else c.succeeded(client)
      } else if (c.kind === 'distributed-flood') c.requested(client, prefix, s.bucket)
      else if (newClient) c.rotated(client, prefix)
      return c
    },

    participant(route, client) {
      const c = routes.get(route)?.campaign
      return c !== undefined && c.includes(client) ? c : undefined
    },

    active(now) {
      const bucket = Math.floor(now / bucketMs)
      if (bucket > sweptBucket) sweptBucket = bucket
      sweep(bucket, now, undefined)
      return activeRoutes.map((s) => s.campaign as CampaignRecord)
    },

    footprint() {
      let participants = 0
      for (const s of activeRoutes) participants += (s.campaign as CampaignRecord).size
      return { routes: routes.size, campaigns: activeRoutes.length, participants }
    },
  }
}
