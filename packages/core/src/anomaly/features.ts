/**
 * What the anomaly engine knows of each client: a row of numbers, updated in O(1) per
 * request with no timer. Counts decay exponentially with the time since the client's
 * last request (a count with time constant τ approximates the requests of the last τ);
 * distinct routes and paths are 64-bit bitmaps read by linear counting (Whang et al.,
 * 1990), two per window so the count slides; inter-arrival times feed an EWMA of their
 * mean and variance. Rows live in one Float64Array grown on demand, not in objects: a
 * JS object of sixty numbers boxes each of them, and 100,000 clients would not fit the
 * issue's 1 KB each. Clients are kept least recently seen out first (lru-cache maps a
 * key to its row).
 */
import { LRUCache } from 'lru-cache'
import { hash32, linearCount, popcount32 } from '../kernel/hash.js'

/** The row's fields. */
export const enum F {
  LAST, // ms of the last request
  FIRST,
  REQUESTS, // all requests ever seen
  N_SHORT, // decayed count, τ = 10 s
  N_MID, // τ = 60 s
  N_LONG, // τ = 300 s; the ratios below decay with it
  ERR,
  C4XX,
  C404,
  C401,
  ASSET,
  WRITE,
  TOOL_UA,
  NO_LANG,
  BODY, // EWMA of log2(1 + request body bytes)
  GAP_MEAN, // EWMA of the inter-arrival time, s
  GAP_VAR,
  WINDOW, // start of the bitmaps' current window
  ROUTES_LO,
  ROUTES_HI,
  ROUTES_PREV_LO,
  ROUTES_PREV_HI,
  PATHS_LO,
  PATHS_HI,
  PATHS_PREV_LO,
  PATHS_PREV_HI,
  ENTROPY, // 16 buckets of path hashes, decayed with N_LONG
  // Rule state.
  FLOOD = ENTROPY + 16, // decayed with τ = the flood rule's seconds
  N404_MID, // 404s, τ = 60 s
  PAGES_MID, // page (not asset) requests, τ = 60 s
  FAIL_ROUTE, // hash of the route of the current 401/403 streak
  FAIL_STREAK,
  FAIL_AT,
  ENUM_ROUTE, // hash of the templated route being walked
  ENUM_LO,
  ENUM_HI,
  ENUM_N,
  ENUM_FAIL,
  UAS, // 32-bit bitmap of user-agent hashes: how many browsers share the address (this window)
  UAS_PREV, // …and the window before
  UA_HASH, // the last user agent's hash, and whether it looked like a tool
  UA_TOOL,
  // Verdict state.
  SCORE,
  SCORED_AT,
  UNSCORED, // requests since the last scoring
  HOT, // consecutive scorings at or over the threshold
  SNAPSHOT_AT,
  RULE, // the last rule that fired, as its index + 1
  FLAGGED, // 1 while flagged
  WHY_RULE, // the rule the reasons kept were written for
  KEY_HASH, // hash32 of the client's key, for the campaign detectors' sketches (once per client)
  FIELDS,
}

/** The features the forest sees, in this order (names for explanations and `top()`). */
export const FEATURES = [
  'rate_10s',
  'rate_5m',
  'error_ratio',
  'ratio_4xx',
  'ratio_404',
  'ratio_401_403',
  'distinct_routes',
  'path_entropy',
  'interarrival_mean',
  'interarrival_cv',
  'write_share',
  'asset_share',
  'tool_agent',
  'no_accept_language',
  'body_size',
] as const
export const DIMENSIONS = FEATURES.length

const TAU_SHORT = 10_000
const TAU_MID = 60_000
const TAU_LONG = 300_000
/** The bitmaps' window: distinct counts cover the last one to two of them. */
const WINDOW_MS = 300_000
/** What an asset counts in the flood rule: a page load pulls in dozens at once. */
const ASSET_WEIGHT = 0.1
/** EWMA weight of a new inter-arrival time and body size. */
const ALPHA = 0.1
/** Gaps longer than this count as this: a return after a day is not a rhythm. */
const MAX_GAP_S = 600

/** Distinct values in a 64-bit bitmap (two words). */
const distinct = (lo: number, hi: number): number => linearCount(popcount32(lo) + popcount32(hi), 64)

/** User agents of tools and libraries, not browsers (curl, python-requests, Go, scrapers). */
const TOOL_AGENT =
  /curl|wget|python|go-http|java\/|okhttp|libwww|httpclient|axios|node-fetch|undici|scrapy|aiohttp|httpie|postman|insomnia|headless|phantom|selenium|^$/i
/** Extensions of assets a page load pulls in. */
const ASSET_EXT = new Set([
  'css', 'js', 'mjs', 'map', 'png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'avif', 'ico',
  'woff', 'woff2', 'ttf', 'otf', 'eot', 'mp4', 'webm', 'mp3', 'json', 'txt', 'xml',
]) // prettier-ignore

/** Whether a path names an asset (by its extension). */
export function isAsset(path: string): boolean {
  // A path ending in a slash (a page, `/`) has no extension: the usual case, decided at once.
  if (path.charCodeAt(path.length - 1) === 0x2f) return false
  const dot = path.lastIndexOf('.')
  if (dot < 0 || dot < path.lastIndexOf('/')) return false
  return ASSET_EXT.has(path.slice(dot + 1).toLowerCase())
}

/** A route template with a parameter: one whose distinct paths are IDs being walked. */
const templated = (route: string): boolean => route.includes(':') || route.includes('*')

/** What one finished request says of its client. */
export interface Seen {
  readonly now: number
  readonly path: string
  readonly route: string
  readonly status: number
  readonly method: string | undefined
  /** The request's `rawHeaders`: a batch keeps these, never the request (see the engine's `pending`). */
  readonly rawHeaders: readonly string[]
}

/** Rows of clients, least recently seen out first. */
export class ClientTable {
  /** The rows; a client's row starts at `slot * F.FIELDS`. */
  rows: Float64Array
  private readonly index: LRUCache<string, number>
  private readonly free: number[] = []
  private used = 0
  /** Decay factor of the flood count per ms, fixed by the rule's seconds. */
  private readonly floodTau: number

  constructor(
    readonly max: number,
    floodSeconds: number,
  ) {
    this.floodTau = floodSeconds * 1000
    this.rows = new Float64Array(Math.min(max, 1024) * F.FIELDS)
    this.index = new LRUCache<string, number>({
      max,
      dispose: (slot) => {
        this.free.push(slot)
        if (slot === this.lastSlot) this.lastKey = undefined
      },
    })
  }

  get size(): number {
    return this.index.size
  }

  /** The row of `key`, if known (not touched). */
  peek(key: string): number | undefined {
    return this.index.peek(key)
  }

  /** Clients, most recently seen first. */
  *entries(): Generator<[key: string, slot: number]> {
    for (const [key, slot] of this.index.entries()) yield [key, slot]
  }

  /** The key last touched and its row: already the most recent in the index (exact, cleared when it goes). */
  private lastKey: string | undefined = undefined
  private lastSlot = -1

  /** The row of `key`, created (zeroed) when new; `isNew` tells which. */
  touch(key: string): number {
    // A client's requests come in runs (a page and its assets, a poller, a flood): the row of
    // the last one needs no LRU lookup nor move, it is the most recent already.
    if (key === this.lastKey) {
      this.isNew = false
      return this.lastSlot
    }
    let slot = this.index.get(key)
    if (slot !== undefined) {
      this.isNew = false
      this.lastKey = key
      this.lastSlot = slot
      return slot
    }
    slot = this.free.pop() ?? this.used++
    const end = (slot + 1) * F.FIELDS
    if (end > this.rows.length) {
      // Grow by doubling, up to the bound: memory follows the clients actually seen.
      const grown = new Float64Array(Math.min(this.max * F.FIELDS, Math.max(end, this.rows.length * 2)))
      grown.set(this.rows)
      this.rows = grown
    }
    this.rows.fill(0, slot * F.FIELDS, end)
    this.rows[slot * F.FIELDS + F.KEY_HASH] = hash32(key)
    this.index.set(key, slot)
    this.isNew = true
    this.lastKey = key
    this.lastSlot = slot
    return slot
  }
  /** Whether the last `touch` created the row. */
  isNew = false

  // Memos of the last update, exact (the same calls on the same inputs): a busy client's gaps
  // repeat (0 ms, 1 ms apart) and most requests repeat a route, so each is often computed once.
  /** The last gap (ms) and its decay factors. */
  private gap = 0
  private dShort = 1
  private dMid = 1
  private dLong = 1
  private dFlood = 1
  /** The last route, its hash and whether it is templated. */
  private route = ''
  private routeHash = hash32('')
  private routeTemplated = false
  /** The last user agent and its hash. */
  private ua = ''
  private uaHash = hash32('') ^ 0
  /** The last path, its hash and whether it names an asset. */
  private path = ''
  private pathHash = hash32('')
  private pathAsset = false

  /**
   * Update a client's row with one finished request.
   *
   * @example
   * const slot = table.touch(key)
   * table.update(slot, { now, path: '/login', route: '/login', status: 401, method: 'POST', rawHeaders })
   */
  update(slot: number, seen: Seen): void {
    const r = this.rows
    const o = slot * F.FIELDS
    const { now, path, route, status } = seen
    const last = r[o + F.LAST] as number
    const first = r[o + F.REQUESTS] === 0
    const dt = first ? 0 : Math.max(0, now - last)
    if (first) {
      r[o + F.FIRST] = now
      r[o + F.WINDOW] = now
    }
    r[o + F.LAST] = now
    r[o + F.REQUESTS] = (r[o + F.REQUESTS] as number) + 1

    // Decay, then count this request.
    if (dt !== this.gap) {
      this.gap = dt
      this.dShort = Math.exp(-dt / TAU_SHORT)
      this.dMid = Math.exp(-dt / TAU_MID)
      this.dLong = Math.exp(-dt / TAU_LONG)
      this.dFlood = Math.exp(-dt / this.floodTau)
    }
    const { dShort, dMid, dLong } = this
    if (path !== this.path) {
      this.path = path
      this.pathHash = hash32(path)
      this.pathAsset = isAsset(path)
    }
    const { pathHash, pathAsset: asset } = this
    if (route !== this.route) {
      this.route = route
      this.routeHash = hash32(route)
      this.routeTemplated = templated(route)
    }
    const { routeHash } = this
    r[o + F.N_SHORT] = (r[o + F.N_SHORT] as number) * dShort + 1
    r[o + F.N_MID] = (r[o + F.N_MID] as number) * dMid + 1
    r[o + F.N_LONG] = (r[o + F.N_LONG] as number) * dLong + 1
    const method = seen.method ?? 'GET'
    const write = method !== 'GET' && method !== 'HEAD'
    r[o + F.ERR] = (r[o + F.ERR] as number) * dLong + (status >= 500 ? 1 : 0)
    r[o + F.C4XX] = (r[o + F.C4XX] as number) * dLong + (status >= 400 && status < 500 ? 1 : 0)
    r[o + F.C404] = (r[o + F.C404] as number) * dLong + (status === 404 ? 1 : 0)
    const denied = status === 401 || status === 403
    r[o + F.C401] = (r[o + F.C401] as number) * dLong + (denied ? 1 : 0)
    r[o + F.ASSET] = (r[o + F.ASSET] as number) * dLong + (asset ? 1 : 0)
    r[o + F.WRITE] = (r[o + F.WRITE] as number) * dLong + (write ? 1 : 0)
    // The fields from `rawHeaders`, in one pass: reading `req.headers` would build Node's
    // header object, which nothing else on the request path does (measured: +6 µs a request).
    const raw = seen.rawHeaders
    let ua = ''
    let uaSeen = false
    let language = false
    let length = 0
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string
      const len = name.length
      if (len === 10) {
        if (!uaSeen && named(name, 'user-agent', 'User-Agent')) {
          ua = raw[i + 1] as string
          uaSeen = true
        }
      } else if (len === 15) {
        if (named(name, 'accept-language', 'Accept-Language')) language = true
      } else if (len === 14) {
        if (named(name, 'content-length', 'Content-Length')) length = Number(raw[i + 1])
      }
    }
    // The tail of a user agent tells browsers and their versions apart; hashing all of it costs more.
    // The same agent as the last request's (one client's run, or a common browser) is not hashed again.
    if (ua !== this.ua) {
      this.ua = ua
      this.uaHash = hash32(ua, Math.max(0, ua.length - 48)) ^ ua.length
    }
    const { uaHash } = this
    if (uaHash !== r[o + F.UA_HASH] || first) {
      r[o + F.UA_HASH] = uaHash
      r[o + F.UA_TOOL] = TOOL_AGENT.test(ua) ? 1 : 0
      r[o + F.UAS] = ((r[o + F.UAS] as number) | (1 << (uaHash & 31))) >>> 0
    }
    r[o + F.TOOL_UA] = (r[o + F.TOOL_UA] as number) * dLong + (r[o + F.UA_TOOL] as number)
    r[o + F.NO_LANG] = (r[o + F.NO_LANG] as number) * dLong + (language ? 0 : 1)
    const bytes = Number.isFinite(length) && length > 0 ? Math.log2(1 + length) : 0
    r[o + F.BODY] = first ? bytes : (r[o + F.BODY] as number) * (1 - ALPHA) + bytes * ALPHA

    if (!first) {
      // Welford-style EWMA of the gap's mean and variance (Finch, 2009).
      const gap = Math.min(dt / 1000, MAX_GAP_S)
      if (r[o + F.REQUESTS] === 2) r[o + F.GAP_MEAN] = gap
      else {
        const diff = gap - (r[o + F.GAP_MEAN] as number)
        const incr = ALPHA * diff
        r[o + F.GAP_MEAN] = (r[o + F.GAP_MEAN] as number) + incr
        r[o + F.GAP_VAR] = (1 - ALPHA) * ((r[o + F.GAP_VAR] as number) + diff * incr)
      }
    }

    // Distinct routes and paths: a new window every WINDOW_MS, the last one kept.
    if (now - (r[o + F.WINDOW] as number) >= WINDOW_MS) {
      const stale = now - (r[o + F.WINDOW] as number) >= 2 * WINDOW_MS
      r[o + F.ROUTES_PREV_LO] = stale ? 0 : (r[o + F.ROUTES_LO] as number)
      r[o + F.ROUTES_PREV_HI] = stale ? 0 : (r[o + F.ROUTES_HI] as number)
      r[o + F.PATHS_PREV_LO] = stale ? 0 : (r[o + F.PATHS_LO] as number)
      r[o + F.PATHS_PREV_HI] = stale ? 0 : (r[o + F.PATHS_HI] as number)
      r[o + F.UAS_PREV] = stale ? 0 : (r[o + F.UAS] as number)
      r[o + F.ROUTES_LO] = r[o + F.ROUTES_HI] = r[o + F.PATHS_LO] = r[o + F.PATHS_HI] = r[o + F.UAS] = 0
      r[o + F.WINDOW] = now
    }
    setBit(r, o + F.ROUTES_LO, routeHash)
    setBit(r, o + F.PATHS_LO, pathHash)
    const e = o + F.ENTROPY
    // No gap, no decay (x · 1 is x): a flood's requests mostly come within the same millisecond.
    if (dLong !== 1) for (let i = 0; i < 16; i++) r[e + i] = (r[e + i] as number) * dLong
    r[e + (pathHash >>> 28)] = (r[e + (pathHash >>> 28)] as number) + 1

    // Rule state.
    r[o + F.FLOOD] = (r[o + F.FLOOD] as number) * this.dFlood + (asset ? ASSET_WEIGHT : 1)
    r[o + F.N404_MID] = (r[o + F.N404_MID] as number) * dMid + (status === 404 ? 1 : 0)
    r[o + F.PAGES_MID] = (r[o + F.PAGES_MID] as number) * dMid + (asset ? 0 : 1)
    if (denied) {
      // A streak is one route's failures with no success there between, none ten minutes apart.
      if (r[o + F.FAIL_ROUTE] === routeHash && now - (r[o + F.FAIL_AT] as number) < 600_000)
        r[o + F.FAIL_STREAK] = (r[o + F.FAIL_STREAK] as number) + 1
      else {
        r[o + F.FAIL_ROUTE] = routeHash
        r[o + F.FAIL_STREAK] = 1
      }
      r[o + F.FAIL_AT] = now
    } else if (status < 400 && r[o + F.FAIL_ROUTE] === routeHash) r[o + F.FAIL_STREAK] = 0
    if (this.routeTemplated) {
      if (r[o + F.ENUM_ROUTE] !== routeHash) {
        r[o + F.ENUM_ROUTE] = routeHash
        r[o + F.ENUM_LO] = r[o + F.ENUM_HI] = r[o + F.ENUM_N] = r[o + F.ENUM_FAIL] = 0
      }
      setBit(r, o + F.ENUM_LO, pathHash)
      r[o + F.ENUM_N] = (r[o + F.ENUM_N] as number) + 1
      if (status === 404 || denied) r[o + F.ENUM_FAIL] = (r[o + F.ENUM_FAIL] as number) + 1
    }
    r[o + F.UNSCORED] = (r[o + F.UNSCORED] as number) + 1
  }

  /** Distinct routes (by template) over the last one to two windows. */
  distinctRoutes(slot: number): number {
    return this.windowed(slot * F.FIELDS, F.ROUTES_LO, F.ROUTES_PREV_LO)
  }
  /** Distinct paths over the last one to two windows. */
  distinctPaths(slot: number): number {
    return this.windowed(slot * F.FIELDS, F.PATHS_LO, F.PATHS_PREV_LO)
  }
  /** Distinct values of a bitmap (`at`, `at + 1`) and the previous window's (`prev`, `prev + 1`) together. */
  private windowed(o: number, at: F, prev: F): number {
    const r = this.rows
    return distinct(
      ((r[o + at] as number) | (r[o + prev] as number)) >>> 0,
      ((r[o + at + 1] as number) | (r[o + prev + 1] as number)) >>> 0,
    )
  }
  /** Distinct IDs walked on the current templated route. */
  distinctIds(slot: number): number {
    const o = slot * F.FIELDS
    return distinct(this.rows[o + F.ENUM_LO] as number, this.rows[o + F.ENUM_HI] as number)
  }
  /** Browsers sharing the client's address (distinct user agents, by linear counting over 32 bits). */
  agents(slot: number): number {
    const o = slot * F.FIELDS
    const bits = ((this.rows[o + F.UAS] as number) | (this.rows[o + F.UAS_PREV] as number)) >>> 0
    return linearCount(popcount32(bits), 32)
  }

  /** Write the client's features (`FEATURES`, in order) into `out`. */
  features(slot: number, now: number, out: Float64Array): Float64Array {
    const r = this.rows
    const o = slot * F.FIELDS
    const dt = Math.max(0, now - (r[o + F.LAST] as number))
    const dLong = Math.exp(-dt / TAU_LONG)
    const n = Math.max((r[o + F.N_LONG] as number) * dLong, 1e-9)
    const ratio = (field: F): number => ((r[o + field] as number) * dLong) / n
    out[0] = Math.log1p(((r[o + F.N_SHORT] as number) * Math.exp(-dt / TAU_SHORT) * 60_000) / TAU_SHORT)
    out[1] = Math.log1p((n * 60_000) / TAU_LONG)
    out[2] = ratio(F.ERR)
    out[3] = ratio(F.C4XX)
    out[4] = ratio(F.C404)
    out[5] = ratio(F.C401)
    out[6] = Math.log1p(this.distinctRoutes(slot))
    // Shannon entropy of the paths' hash buckets, in bits (0 to 4).
    let total = 0
    for (let i = 0; i < 16; i++) total += r[o + F.ENTROPY + i] as number
    let entropy = 0
    if (total > 0)
      for (let i = 0; i < 16; i++) {
        const p = (r[o + F.ENTROPY + i] as number) / total
        if (p > 0) entropy -= p * Math.log2(p)
      }
    out[7] = entropy
    const mean = r[o + F.GAP_MEAN] as number
    out[8] = Math.log10(mean + 0.001)
    out[9] = mean > 0 ? Math.sqrt(Math.max(0, r[o + F.GAP_VAR] as number)) / mean : 0
    out[10] = ratio(F.WRITE)
    out[11] = ratio(F.ASSET)
    out[12] = ratio(F.TOOL_UA)
    out[13] = ratio(F.NO_LANG)
    out[14] = r[o + F.BODY] as number
    return out
  }
}

/** Whether a raw header name is `lower` (any case): the usual spellings compared first, without allocating. */
const named = (name: string, lower: string, title: string): boolean =>
  name === lower || name === title || name.toLowerCase() === lower

/**
 * A header's first value in `rawHeaders`; `lower` is its name in lower case; with `once`,
 * none when the header is sent more than once. Cheaper than `req.headers`, which Node builds
 * on first read, and the same answer for a header sent once.
 */
export function firstHeader(raw: readonly string[], lower: string, once = false): string | undefined {
  let value: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    if (name.length !== lower.length || (name !== lower && name.toLowerCase() !== lower)) continue
    if (value !== undefined) return undefined // `once`: a second one
    value = raw[i + 1]
    if (!once) return value
  }
  return value
}

/** Set the bit `h` picks in the 64-bit bitmap at `at` (low word) and `at + 1` (high word). */
function setBit(r: Float64Array, at: number, h: number): void {
  const bit = h & 63
  const word = at + (bit >>> 5)
  r[word] = ((r[word] as number) | (1 << (bit & 31))) >>> 0
}
