/**
 * The anomaly engine's simulator: seeded traffic of benign clients and
 * attackers against the site of site.mjs, over a virtual duration.
 *
 * Benign: browsing humans (a page, then its assets within about a second,
 * log-normal think times, the odd 404 and mistyped password), the same behind
 * three NAT addresses, API pollers on a fixed period, polite crawlers. Attacks,
 * naive and evasive: floods, path scanners, credential stuffing and brute
 * force, ID enumeration, scrapers, and one stuffing campaign spread over 250
 * addresses. Attackers arrive at staggered times after a warm-up, and some in
 * the first minute, when nothing has been learned yet.
 *
 * Every draw comes from the seed (random.mjs): the same seed, minutes and scale
 * give the same requests, byte for byte.
 *
 * `node bench/anomaly/traffic.mjs [--seed N] [--minutes M] [--scale S]` prints
 * the count per profile and the first requests.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from '../lib/args.mjs'
import {
  CRAWLERS,
  POLLER_AGENTS,
  PROBE_PATHS,
  SCANNER_AGENTS,
  SCRAPER_AGENTS,
  SITE,
  TOOL_AGENTS,
  browserIdentity,
  createAddressPool,
} from './identities.mjs'
import { clamp, createRandom } from './random.mjs'
import { COMMON_ASSETS, ITEMS, PAGES, isPrivateItem, pageImages, passwordFor } from './site.mjs'

/**
 * The profiles: whether each is an attacker, an evasive variant, and the attack
 * family its targets are stated for (docs/anomaly.md).
 */
export const PROFILES = {
  human: { attacker: false, about: 'browsing human: a page, its assets within ~1 s, think times, logins' },
  'nat-human': { attacker: false, about: 'browsing human behind a NAT address shared with 20–50 others' },
  'api-poller': { attacker: false, about: 'integration polling the JSON API on a fixed period, API key' },
  crawler: { attacker: false, about: 'search engine crawler, one page every 2–10 s, crawler UA' },
  flood: { attacker: true, family: 'flood', about: 'one address, one URL, 30–100 req/s, tool UA' },
  'flood-rotating-ua': {
    attacker: true,
    evasive: true,
    family: 'flood',
    about: 'one address, browser UA rotated per request, cache-busting queries',
  },
  scanner: { attacker: true, family: 'scanner', about: '404 bursts on paths never served, 5–25 req/s' },
  'scanner-slow': { attacker: true, evasive: true, family: 'scanner', about: 'one probe every 15–45 s' },
  'scanner-mixed': {
    attacker: true,
    evasive: true,
    family: 'scanner',
    about: 'probes between real pages (half 200s), browser UA',
  },
  stuffing: { attacker: true, family: 'stuffing', about: 'POST /login, a new user each try, 1–4/s, tool UA' },
  'brute-force': {
    attacker: true,
    family: 'stuffing',
    about: 'POST /login, one user, many passwords, 1–5/s',
  },
  'stuffing-human-pace': {
    attacker: true,
    evasive: true,
    family: 'stuffing',
    about: 'a login every 8–30 s from a browser with a page view first',
  },
  enumerator: { attacker: true, family: 'enumerator', about: 'walks /api/items/:id upwards, 5–20/s' },
  scraper: {
    attacker: true,
    family: 'scraper',
    about: 'many distinct pages, 3–10/s, no assets, tool or rotating UA',
  },
  'scraper-stealthy': {
    attacker: true,
    evasive: true,
    family: 'scraper',
    about: 'browser UA, languages, some assets, jittered 1–8 s between pages',
  },
  'stuffing-distributed': {
    attacker: true,
    family: 'campaign',
    about: '250 addresses in distinct /24s, 1–5 logins each, over ~10 min',
  },
}

/** How many clients of each profile at `--scale 1`. */
export const MIX = {
  human: 300,
  'nat-human': 3, // NAT addresses; each has 20–50 humans behind it
  'api-poller': 30,
  crawler: 5,
  flood: 20,
  'flood-rotating-ua': 8,
  scanner: 20,
  'scanner-slow': 6,
  'scanner-mixed': 6,
  stuffing: 15,
  'brute-force': 10,
  'stuffing-human-pace': 8,
  enumerator: 10,
  scraper: 15,
  'scraper-stealthy': 6,
  'stuffing-distributed': 1, // campaigns
}

/** Addresses of the distributed stuffing campaign: a constant, whatever the scale. */
export const CAMPAIGN_ADDRESSES = 250

const SECOND = 1000
const MINUTE = 60 * SECOND

/** A page number as humans pick them: popular pages first (a heavy head), the long tail seldom. */
const popularPage = (r) => Math.floor(PAGES * r.next() ** 3)

/** A leaked address of the kind stuffing lists hold. */
const leakedUser = (r) =>
  `${r.pick(['anna', 'ben', 'chen', 'dmitri', 'eva', 'farid', 'grace', 'hugo', 'ines', 'jon', 'kim', 'lea'])}.${r.pick(['smith', 'meyer', 'garcia', 'rossi', 'novak', 'kowalski', 'silva', 'tanaka', 'dubois', 'jensen'])}${r.int(1, 9999)}@${r.pick(['mail.example', 'post.example', 'inbox.example'])}`

const COMMON_PASSWORDS = [
  '123456',
  'password',
  'qwerty',
  'letmein',
  'admin',
  'welcome1',
  'Summer2024!',
  'iloveyou',
]

/**
 * The generator's state while it builds a run: requests land in one array,
 * clients in another; anything at or after the end of the duration is dropped.
 */
function createRun(durationMs) {
  const requests = []
  const clients = []
  return {
    durationMs,
    requests,
    clients,
    /** Register a client; returns `emit(t, method, path, headers, extra?)` for its requests. */
    client(info) {
      const profile = PROFILES[info.kind]
      const client = { attacker: profile.attacker, evasive: profile.evasive === true, ...info }
      clients.push(client)
      const { id, kind, attacker, ip } = client
      return (t, method, path, headers, extra) => {
        if (t < 0 || t >= durationMs) return false
        requests.push({ t: Math.round(t), client: id, kind, attacker, ip, method, path, headers, ...extra })
        return true
      }
    },
  }
}

/**
 * Attackers start after the warm-up (the first quarter of the run), or in the
 * first minute (one in five): the rules must act before anything is learned.
 * `needs`: how long the attack takes; it is started early enough to finish.
 */
function attackStart(r, run, needs) {
  const D = run.durationMs
  if (r.chance(0.2)) return r.float(0, Math.min(MINUTE, D))
  const warmup = 0.25 * D
  return r.float(warmup, Math.max(warmup, D - needs))
}

/**
 * A browsing human: sessions of page views, each page followed by its assets
 * (all of them on the first view, the page's images afterwards: the rest is
 * cached) and, now and then, a JSON call for items shown on it; a favicon miss
 * on the first view, typos (404) and dead links now and then, a login in some
 * sessions with the occasional wrong password (401) and a retry. Think times are
 * log-normal (median 15 s). Returning sessions keep the cookie.
 */
function browsingHuman(run, r, { id, kind, ip, start, sessions }) {
  const emit = run.client({ id, kind, ip, start })
  const browser = browserIdentity(r)
  const user = `user-${id}@mail.example`
  let cookie
  let cached = false
  let loggedIn = false
  let t = start
  for (let s = 0; s < sessions && t < run.durationMs; s++) {
    const views = clamp(Math.round(r.logNormal(5, 0.8)), 1, 40)
    const loginAt = r.chance(loggedIn ? 0.05 : 0.3) ? r.int(0, views - 1) : -1
    let page = r.chance(0.5) ? -1 : popularPage(r) // -1: the home page
    let referer
    for (let v = 0; v < views && t < run.durationMs; v++) {
      const path = page < 0 ? '/' : `/page/${page}`
      const extra = (more) => ({
        ...(cookie === undefined ? {} : { cookie }),
        ...(referer === undefined ? {} : { referer }),
        ...more,
      })
      // A mistyped or dead link first, now and then: a 404, then the right page a few seconds later.
      if (page >= 0 && r.chance(0.03)) {
        const typo = r.pick([
          `/pgae/${page}`,
          `/pages/${page}`,
          `/page/${page})`,
          `/page/${PAGES + r.int(0, 999)}`,
        ])
        emit(t, 'GET', typo, browser.headers('document', extra()))
        t += r.float(2, 6) * SECOND
      }
      emit(t, 'GET', path, browser.headers('document', extra()))
      cookie ??= `sid=${r.hex(24)}`
      const pageUrl = `${SITE}${path}`
      const assets = cached
        ? pageImages(Math.max(page, 0), r.int(3, 15))
        : [
            ...COMMON_ASSETS.slice(0, r.int(6, COMMON_ASSETS.length)),
            ...pageImages(Math.max(page, 0), r.int(4, 28)),
          ]
      // Browsers fetch a page's assets over a handful of connections, within about a second.
      const offsets = assets.map(() => r.float(30, 1000)).sort((a, b) => a - b)
      assets.forEach((asset, k) => {
        const dest = asset.endsWith('.css')
          ? 'style'
          : asset.endsWith('.js')
            ? 'script'
            : asset.endsWith('.woff2')
              ? 'font'
              : 'image'
        emit(t + offsets[k], 'GET', asset, browser.headers(dest, { cookie, referer: pageUrl }))
      })
      if (!cached) {
        emit(
          t + r.float(50, 400),
          'GET',
          '/favicon.ico',
          browser.headers('image', { cookie, referer: pageUrl }),
        )
        if (browser.ua.includes('iPhone'))
          emit(t + r.float(50, 400), 'GET', '/apple-touch-icon.png', browser.headers('image', { cookie }))
        cached = true
      }
      // The items on the page, as JSON: a link a human follows is nearly always to a public one.
      if (r.chance(0.3)) {
        const calls = r.int(1, 3)
        for (let k = 0; k < calls; k++) {
          let item = (Math.max(page, 0) * 5 + r.int(0, 4)) % ITEMS
          if (isPrivateItem(item) && !r.chance(0.05)) item += 1
          const at = t + r.float(300, 1500)
          emit(at, 'GET', `/api/items/${item}`, browser.headers('fetch', { cookie, referer: pageUrl }))
        }
      }
      if (v === loginAt) {
        t += r.float(4, 20) * SECOND
        // A wrong password now and then (a typo), retried a few seconds later; rarely twice.
        const typos = r.chance(0.12) ? (r.chance(0.25) ? 2 : 1) : 0
        for (let k = 0; k <= typos; k++) {
          const password = k < typos ? `${passwordFor(user)}x` : passwordFor(user)
          emit(
            t,
            'POST',
            '/login',
            browser.headers('fetch', { cookie, referer: pageUrl, 'content-type': 'application/json' }),
            { body: JSON.stringify({ user, password }) },
          )
          t += r.float(3, 10) * SECOND
        }
        loggedIn = true
      }
      referer = pageUrl
      page = r.chance(0.15) ? -1 : r.chance(0.5) ? clamp(page + r.int(-3, 3), 0, PAGES - 1) : popularPage(r)
      t += clamp(r.logNormal(15 * SECOND, 0.7), 2 * SECOND, 5 * MINUTE)
    }
    t += clamp(r.logNormal(4 * MINUTE, 0.6), MINUTE, 20 * MINUTE)
  }
}

/**
 * An integration polling `GET /api/poll` every `period` (5–60 s) with a jitter
 * of about 1%; one in four also fetches an item of its own each cycle.
 */
function apiPoller(run, r, { id, ip }) {
  const period = r.float(5, 60) * SECOND
  const emit = run.client({ id, kind: 'api-poller', ip, start: 0 })
  const ua = r.pick(POLLER_AGENTS)
  const auth = r.chance(0.7) ? { 'x-api-key': `key_${r.hex(32)}` } : { authorization: `Bearer ${r.hex(40)}` }
  const headers = { 'user-agent': ua, accept: 'application/json', 'accept-encoding': 'gzip', ...auth }
  const item = r.chance(0.25) ? r.int(0, ITEMS - 1) : undefined
  const ownItem = item === undefined || isPrivateItem(item) ? undefined : item
  for (let t = r.float(0, period); t < run.durationMs; t += period * (1 + 0.01 * r.normal())) {
    emit(t, 'GET', '/api/poll', headers)
    if (ownItem !== undefined) emit(t + r.float(10, 80), 'GET', `/api/items/${ownItem}`, headers)
  }
}

/**
 * A polite crawler: robots.txt, the home page, then distinct pages one every
 * 2–10 s (its own pace, −25% to +30%), the odd dead link and sitemap miss, now and then
 * a stylesheet or script for rendering. No cookies, no languages.
 */
function crawler(run, r, { id, ip }) {
  const { ua, from } = r.pick(CRAWLERS)
  const pace = r.float(2, 10) * SECOND
  const start = r.float(0, run.durationMs / 2)
  const emit = run.client({ id, kind: 'crawler', ip, start })
  const headers = {
    'user-agent': ua,
    accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
    'accept-encoding': 'gzip, deflate, br',
    ...(from === undefined ? {} : { from }),
  }
  const order = r.shuffle(Array.from({ length: PAGES }, (_, n) => n))
  const paths = ['/robots.txt', '/', '/sitemap.xml']
  let t = start
  for (let k = 0; t < run.durationMs; k++) {
    let path = paths[k] ?? `/page/${order[k - paths.length] ?? r.int(0, PAGES - 1)}`
    if (k >= paths.length && r.chance(0.03)) path = `/page/${PAGES + r.int(0, 5000)}`
    emit(t, 'GET', path, headers)
    if (k >= paths.length && r.chance(0.1))
      emit(t + r.float(100, 600), 'GET', r.pick(COMMON_ASSETS.slice(0, 5)), { ...headers, accept: '*/*' })
    t += pace * r.float(0.75, 1.3)
  }
}

/** A single-source flood: one URL (or a few pages), 30–100 requests a second, 300–600 of them. */
function flood(run, r, { id, ip }) {
  const rate = r.float(30, 100)
  const count = r.int(300, 600)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'flood', ip, start })
  const ua = r.chance(0.1) ? undefined : r.pick(TOOL_AGENTS)
  const headers = { accept: '*/*', ...(ua === undefined ? {} : { 'user-agent': ua }) }
  const target = r.pick(['/', '/page/1', '/api/items/1', '/api/poll', '/page/42'])
  const rotate = r.chance(0.3)
  for (let k = 0, t = start; k < count; k++, t += (SECOND / rate) * r.float(0.9, 1.1)) {
    emit(t, 'GET', rotate ? `/page/${r.int(0, 20)}` : target, headers, { probe: true })
  }
}

/** A flood from one address whose user agent changes with every request, with cache-busting queries. */
function floodRotatingUa(run, r, { id, ip }) {
  const rate = r.float(20, 60)
  const count = r.int(300, 500)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'flood-rotating-ua', ip, start })
  const browsers = Array.from({ length: 40 }, () => browserIdentity(r))
  for (let k = 0, t = start; k < count; k++, t += (SECOND / rate) * r.float(0.6, 1.4)) {
    const base = r.chance(0.5) ? '/' : `/page/${r.int(0, 30)}`
    const path = r.chance(0.5) ? `${base}?_=${r.hex(8)}` : base
    emit(t, 'GET', path, r.pick(browsers).headers('document'), { probe: true })
  }
}

/** A naive path scanner: 80–150 probes of paths the site never served, 5–25 a second, a scanner's UA. */
function scanner(run, r, { id, ip }) {
  const rate = r.float(5, 25)
  const probes = r.shuffle(PROBE_PATHS).slice(0, r.int(80, 150))
  const start = attackStart(r, run, (probes.length / rate) * SECOND)
  const emit = run.client({ id, kind: 'scanner', ip, start })
  const headers = { 'user-agent': r.pick(SCANNER_AGENTS), accept: '*/*' }
  let t = start
  if (r.chance(0.5)) {
    emit(t, 'GET', '/', headers)
    t += SECOND / rate
  }
  for (const path of probes) {
    emit(t, 'GET', path, headers, { probe: true })
    t += (SECOND / rate) * r.float(0.5, 1.5)
  }
}

/** A slow scanner: one probe every 15–45 s from a browser UA, as many as fit (20–50). */
function scannerSlow(run, r, { id, ip }) {
  const gap = r.float(15, 45) * SECOND
  const count = Math.max(5, Math.min(r.int(20, 50), Math.floor((run.durationMs * 0.9) / gap)))
  const start = r.chance(0.3) ? r.float(0, MINUTE) : r.float(0, Math.max(0, run.durationMs - count * gap))
  const emit = run.client({ id, kind: 'scanner-slow', ip, start })
  const browser = browserIdentity(r)
  const probes = r.shuffle(PROBE_PATHS).slice(0, count)
  let t = start
  for (const path of probes) {
    emit(t, 'GET', path, browser.headers('document'), { probe: true })
    t += gap * r.float(0.5, 1.5)
  }
}

/** A scanner that hides its probes among real pages (about half 200s), 1–4 requests a second, browser UA. */
function scannerMixed(run, r, { id, ip }) {
  const rate = r.float(1, 4)
  const count = r.int(150, 250)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'scanner-mixed', ip, start })
  const browser = browserIdentity(r)
  const probes = r.shuffle(PROBE_PATHS)
  let p = 0
  for (let k = 0, t = start; k < count; k++, t += (SECOND / rate) * r.float(0.3, 1.7)) {
    if (r.chance(0.5))
      emit(t, 'GET', probes[p++ % probes.length], browser.headers('document'), { probe: true })
    else emit(t, 'GET', r.chance(0.2) ? '/' : `/page/${popularPage(r)}`, browser.headers('document'))
  }
}

/** Login attempts from one address: `users` says who is tried each time, `gap` how long between tries. */
function loginAttempts(emit, r, { start, count, gap, users, headers, successRate }) {
  let t = start
  for (let k = 0; k < count; k++) {
    const user = users(k)
    const password = r.chance(successRate) ? passwordFor(user) : r.pick(COMMON_PASSWORDS) + r.int(0, 99)
    emit(t, 'POST', '/login', headers, { body: JSON.stringify({ user, password }), probe: true })
    t += gap()
  }
  return t
}

/** Credential stuffing from one address: a new leaked user each try, 1–4 tries a second, a tool's UA. */
function stuffing(run, r, { id, ip }) {
  const rate = r.float(1, 4)
  const count = r.int(60, 150)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'stuffing', ip, start })
  const headers = { 'user-agent': r.pick(TOOL_AGENTS), accept: '*/*', 'content-type': 'application/json' }
  loginAttempts(emit, r, {
    start,
    count,
    gap: () => (SECOND / rate) * r.float(0.7, 1.3),
    users: () => leakedUser(r),
    headers,
    successRate: 0.02,
  })
}

/** Brute force: one user, a password list, 1–5 tries a second, never the right one. */
function bruteForce(run, r, { id, ip }) {
  const rate = r.float(1, 5)
  const count = r.int(80, 200)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'brute-force', ip, start })
  const headers = {
    'user-agent': r.pick(TOOL_AGENTS),
    accept: 'application/json',
    'content-type': 'application/json',
  }
  const victim = r.chance(0.5) ? 'admin@shop.example' : `user-h${r.int(0, 299)}@mail.example`
  loginAttempts(emit, r, {
    start,
    count,
    gap: () => (SECOND / rate) * r.float(0.7, 1.3),
    users: () => victim,
    headers,
    successRate: 0,
  })
}

/** Stuffing at a human's pace: a browser loads the home page, then tries a login every 8–30 s. */
function stuffingHumanPace(run, r, { id, ip }) {
  const median = r.float(12, 20) * SECOND
  const count = r.int(20, 60)
  const start = attackStart(r, run, count * median)
  const emit = run.client({ id, kind: 'stuffing-human-pace', ip, start })
  const browser = browserIdentity(r)
  const cookie = `sid=${r.hex(24)}`
  emit(start, 'GET', '/', browser.headers('document'))
  for (const asset of COMMON_ASSETS.slice(0, 5))
    emit(start + r.float(30, 600), 'GET', asset, browser.headers('script', { cookie, referer: `${SITE}/` }))
  loginAttempts(emit, r, {
    start: start + r.float(5, 15) * SECOND,
    count,
    gap: () => clamp(r.logNormal(median, 0.35), 8 * SECOND, 30 * SECOND),
    users: () => leakedUser(r),
    headers: browser.headers('fetch', { cookie, referer: `${SITE}/`, 'content-type': 'application/json' }),
    successRate: 0.02,
  })
}

/** ID enumeration: `GET /api/items/:id` upwards from a random id, 5–20 a second, 200–400 steps (past the end: 404s). */
function enumerator(run, r, { id, ip }) {
  const rate = r.float(5, 20)
  const count = r.int(200, 400)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'enumerator', ip, start })
  const headers = { 'user-agent': r.pick(TOOL_AGENTS), accept: 'application/json' }
  const first = r.int(0, ITEMS - 1000)
  for (let k = 0, t = start; k < count; k++, t += (SECOND / rate) * r.float(0.8, 1.2)) {
    emit(t, 'GET', `/api/items/${first + k}`, headers, { probe: true })
  }
}

/** An aggressive scraper: distinct pages at 3–10 a second, no assets, no cookies; a tool's UA or one rotated per request. */
function scraper(run, r, { id, ip }) {
  const rate = r.float(3, 10)
  const count = r.int(300, 500)
  const start = attackStart(r, run, (count / rate) * SECOND)
  const emit = run.client({ id, kind: 'scraper', ip, start })
  const rotate = r.chance(1 / 3)
  const browsers = rotate ? Array.from({ length: 30 }, () => browserIdentity(r)) : []
  const tool = { 'user-agent': r.pick(SCRAPER_AGENTS), accept: r.pick(['*/*', 'text/html,*/*;q=0.8']) }
  const order = r.shuffle(Array.from({ length: PAGES }, (_, n) => n))
  for (let k = 0, t = start; k < count; k++, t += (SECOND / rate) * r.float(0.7, 1.3)) {
    const headers = rotate ? { 'user-agent': r.pick(browsers).ua, accept: '*/*' } : tool
    emit(t, 'GET', `/page/${order[k % PAGES]}`, headers, { probe: true })
  }
}

/**
 * A stealthy scraper: one browser (UA, languages, cookie), a few of each
 * page's assets, distinct pages 1–8 s apart (log-normal): slower than the
 * aggressive kind, but still many more distinct pages than a human reads.
 */
function scraperStealthy(run, r, { id, ip }) {
  const count = r.int(150, 250)
  const median = r.float(2, 3.5) * SECOND
  const start = attackStart(r, run, count * median * 1.1)
  const emit = run.client({ id, kind: 'scraper-stealthy', ip, start })
  const browser = browserIdentity(r)
  const cookie = `sid=${r.hex(24)}`
  const order = r.shuffle(Array.from({ length: PAGES }, (_, n) => n))
  let referer
  let t = start
  for (let k = 0; k < count; k++) {
    const path = `/page/${order[k]}`
    emit(t, 'GET', path, browser.headers('document', { cookie, ...(referer ? { referer } : {}) }), {
      probe: true,
    })
    const pageUrl = `${SITE}${path}`
    const assets = k === 0 ? COMMON_ASSETS.slice(0, 4) : pageImages(order[k], r.int(1, 3))
    for (const asset of assets)
      emit(t + r.float(100, 800), 'GET', asset, browser.headers('image', { cookie, referer: pageUrl }))
    referer = pageUrl
    t += clamp(r.logNormal(median, 0.5), SECOND, 8 * SECOND)
  }
}

/**
 * The distributed stuffing campaign: 250 residential addresses, each in a /24
 * of its own, 1–5 login tries each (a new leaked user every time, 5–40 s
 * apart), the addresses starting at random within a ten-minute window after
 * the warm-up. Each address is a client of its own; the campaign ties them.
 */
function distributedStuffing(run, r, pool, { campaign }) {
  const D = run.durationMs
  const window = Math.min(10 * MINUTE, 0.6 * D)
  const begin = r.float(0.25 * D, Math.max(0.25 * D, D - window - MINUTE))
  const ids = []
  for (let a = 0; a < CAMPAIGN_ADDRESSES; a++) {
    const ip = pool.proxy()
    const id = `${campaign}/a${a}`
    const start = begin + r.float(0, window)
    const emit = run.client({ id, kind: 'stuffing-distributed', ip, start, campaign })
    const browser = browserIdentity(r)
    const attempts = r.weighted([
      [1, 20],
      [2, 25],
      [3, 25],
      [4, 15],
      [5, 15],
    ])
    const headers = browser.headers('fetch', { 'content-type': 'application/json' })
    if (!r.chance(0.6)) delete headers['accept-language']
    loginAttempts(emit, r, {
      start,
      count: attempts,
      gap: () => r.float(5, 40) * SECOND,
      users: () => leakedUser(r),
      headers,
      successRate: 0.01,
    })
    ids.push(id)
  }
  return { id: campaign, kind: 'stuffing-distributed', method: 'POST', route: '/login', clients: ids }
}

/**
 * Generate one run's traffic.
 *
 * @param {{ seed?: number, minutes?: number, scale?: number }} [options]
 *   `seed` (default 1) decides everything; `minutes` (default 20) the virtual
 *   duration; `scale` (default 1) multiplies every profile's client count (at
 *   least one each; NAT addresses stay three, their humans scale; the campaign
 *   keeps its 250 addresses).
 * @returns the requests in time order (ties in generation order), the clients
 *   with their profile and address, and the campaigns with their first request's time.
 *
 * @example
 * const { requests, clients, campaigns } = generateTraffic({ seed: 7, minutes: 5, scale: 0.2 })
 * requests[0] // { t: 12, client: 'h41', kind: 'human', attacker: false, ip: '…', method: 'GET', path: '/', headers: {…} }
 */
export function generateTraffic({ seed = 1, minutes = 20, scale = 1 } = {}) {
  if (!(minutes > 0) || !(scale > 0)) throw new RangeError('minutes and scale must be positive')
  const master = createRandom(seed)
  const pool = createAddressPool(Math.floor(master.next() * 4294967296))
  const run = createRun(Math.round(minutes * MINUTE))
  const D = run.durationMs
  const count = (kind) => Math.max(1, Math.round(MIX[kind] * scale))

  for (let k = 0; k < count('human'); k++) {
    const r = master.fork()
    const sessions = 1 + (r.chance(0.35) ? 1 : 0) + (r.chance(0.1) ? 1 : 0)
    browsingHuman(run, r, {
      id: `h${k}`,
      kind: 'human',
      ip: pool.benign({ v6: r.chance(0.15) }),
      start: r.float(0, 0.95 * D),
      sessions,
    })
  }
  for (let n = 0; n < MIX['nat-human']; n++) {
    const ip = pool.benign()
    const members = Math.max(3, Math.round(master.int(20, 50) * scale))
    for (let k = 0; k < members; k++) {
      const r = master.fork()
      browsingHuman(run, r, {
        id: `nat${n}/h${k}`,
        kind: 'nat-human',
        ip,
        start: r.float(0, 0.9 * D),
        sessions: r.int(1, 4),
      })
    }
  }
  for (let k = 0; k < count('api-poller'); k++)
    apiPoller(run, master.fork(), { id: `poll${k}`, ip: pool.benign() })
  for (let k = 0; k < count('crawler'); k++)
    crawler(run, master.fork(), { id: `crawl${k}`, ip: pool.benign() })

  const attacks = [
    ['flood', flood],
    ['flood-rotating-ua', floodRotatingUa],
    ['scanner', scanner],
    ['scanner-slow', scannerSlow],
    ['scanner-mixed', scannerMixed],
    ['stuffing', stuffing],
    ['brute-force', bruteForce],
    ['stuffing-human-pace', stuffingHumanPace],
    ['enumerator', enumerator],
    ['scraper', scraper],
    ['scraper-stealthy', scraperStealthy],
  ]
  for (const [kind, make] of attacks)
    for (let k = 0; k < count(kind); k++) {
      const r = master.fork()
      make(run, r, { id: `${kind}${k}`, ip: pool.attacker({ v6: r.chance(0.15) }) })
    }
  const campaigns = []
  for (let k = 0; k < count('stuffing-distributed'); k++)
    campaigns.push(distributedStuffing(run, master.fork(), pool, { campaign: `campaign${k}` }))

  // Array.prototype.sort is stable: equal times keep their generation order.
  run.requests.sort((a, b) => a.t - b.t)
  for (const campaign of campaigns) {
    const members = new Set(campaign.clients)
    campaign.start = run.requests.find((q) => members.has(q.client))?.t ?? 0
  }
  return { seed, minutes, scale, durationMs: D, requests: run.requests, clients: run.clients, campaigns }
}

/** Requests and clients per profile, for a glance at a run's make-up. */
export function summarize({ requests, clients }) {
  const out = {}
  for (const c of clients) (out[c.kind] ??= { clients: 0, requests: 0 }).clients++
  for (const q of requests) out[q.kind].requests++
  return out
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    args: scriptArgs(),
    options: {
      seed: { type: 'string', default: '1' },
      minutes: { type: 'string', default: '20' },
      scale: { type: 'string', default: '1' },
      head: { type: 'string', default: '5' },
    },
  })
  const traffic = generateTraffic({
    seed: Number(values.seed),
    minutes: Number(values.minutes),
    scale: Number(values.scale),
  })
  console.table(summarize(traffic))
  console.log(`${traffic.requests.length} requests, ${traffic.clients.length} clients`)
  for (const q of traffic.requests.slice(0, Number(values.head))) console.log(JSON.stringify(q))
}
