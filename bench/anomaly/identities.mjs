/**
 * Who the simulated clients say they are: browsers (user agent, the Accept
 * headers that go with it, languages, fetch metadata), tools, crawlers and
 * scanners, the probe paths scanners try, and the addresses everyone comes
 * from. Real-world spellings, so an engine tuned here meets the same strings in
 * production; the mix is ours.
 */
import { createRandom } from './random.mjs'

/** The site's origin as the browsers see it (Referer); the evaluator sends `Host: shop.example`. */
export const SITE = 'http://shop.example'
export const HOST = 'shop.example'

const LANGUAGES = [
  ['en-US,en;q=0.9', 30],
  ['en-GB,en;q=0.9', 8],
  ['de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7', 10],
  ['fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7', 8],
  ['es-ES,es;q=0.9', 6],
  ['pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7', 6],
  ['nl-NL,nl;q=0.9,en;q=0.8', 4],
  ['pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7', 4],
  ['it-IT,it;q=0.9,en;q=0.8', 4],
  ['ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7', 4],
  ['en-US', 6],
  ['de', 2],
]

/** What each browser family asks for, by destination (document, style, script, image, font, fetch). */
const ACCEPT = {
  chromium: {
    document:
      'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7',
    style: 'text/css,*/*;q=0.1',
    script: '*/*',
    image: 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8',
    font: '*/*',
    fetch: 'application/json, text/plain, */*',
  },
  firefox: {
    document: 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
    style: 'text/css,*/*;q=0.1',
    script: '*/*',
    image: 'image/avif,image/webp,*/*',
    font: 'application/font-woff2;q=1.0,application/font-woff;q=0.9,*/*;q=0.8',
    fetch: 'application/json, text/plain, */*',
  },
  safari: {
    document: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
    style: 'text/css,*/*;q=0.1',
    script: '*/*',
    image:
      'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
    font: '*/*',
    fetch: 'application/json, text/plain, */*',
  },
}

/** A browser user agent of `family`, with a version and platform drawn from `r`. */
function browserAgent(r, family) {
  const chrome = r.int(116, 127)
  const firefox = r.int(115, 128)
  switch (family) {
    case 'chrome':
      return r.weighted([
        [
          `Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${chrome}.0.0.0 Safari/537.36`,
          5,
        ],
        [
          `Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${chrome}.0.0.0 Safari/537.36`,
          2,
        ],
        [
          `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${chrome}.0.0.0 Safari/537.36`,
          1,
        ],
        [
          `Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${chrome}.0.0.0 Mobile Safari/537.36`,
          4,
        ],
      ])
    case 'edge':
      return `Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${chrome}.0.0.0 Safari/537.36 Edg/${chrome}.0.0.0`
    case 'samsung':
      return `Mozilla/5.0 (Linux; Android ${r.int(12, 14)}; SAMSUNG SM-S${r.int(901, 928)}B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/${r.int(22, 25)}.0 Chrome/${chrome - 4}.0.0.0 Mobile Safari/537.36`
    case 'firefox':
      return r.weighted([
        [`Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:${firefox}.0) Gecko/20100101 Firefox/${firefox}.0`, 4],
        [`Mozilla/5.0 (X11; Linux x86_64; rv:${firefox}.0) Gecko/20100101 Firefox/${firefox}.0`, 2],
        [
          `Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:${firefox}.0) Gecko/20100101 Firefox/${firefox}.0`,
          1,
        ],
      ])
    default: {
      const minor = r.int(0, 6)
      return r.chance(0.5)
        ? `Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.${minor} Safari/605.1.15`
        : `Mozilla/5.0 (iPhone; CPU iPhone OS 17_${minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.${minor} Mobile/15E148 Safari/604.1`
    }
  }
}

/**
 * One browser: its user agent, languages and the header set it sends per
 * destination. `fetchMetadata` is false for the older browsers that send no
 * `Sec-Fetch-*` fields (about one in six here), so an engine cannot lean on them.
 *
 * @example
 * const b = browserIdentity(r)
 * b.headers('document', { referer: `${SITE}/` })
 */
export function browserIdentity(r) {
  const family = r.weighted([
    ['chrome', 55],
    ['safari', 18],
    ['firefox', 12],
    ['edge', 10],
    ['samsung', 5],
  ])
  const engine = family === 'firefox' ? 'firefox' : family === 'safari' ? 'safari' : 'chromium'
  const ua = browserAgent(r, family)
  const language = r.weighted(LANGUAGES)
  const fetchMetadata = r.chance(0.83)
  const encoding = engine === 'safari' ? 'gzip, deflate, br' : 'gzip, deflate, br, zstd'
  return {
    family,
    ua,
    language,
    fetchMetadata,
    /**
     * The headers of one request to `dest` (`document`, `style`, `script`,
     * `image`, `font` or `fetch`), with `extra` (cookie, referer) merged in.
     */
    headers(dest, extra) {
      const h = {
        'user-agent': ua,
        accept: ACCEPT[engine][dest],
        'accept-language': language,
        'accept-encoding': encoding,
      }
      if (fetchMetadata) {
        h['sec-fetch-dest'] = dest === 'fetch' ? 'empty' : dest
        h['sec-fetch-mode'] = dest === 'document' ? 'navigate' : dest === 'fetch' ? 'cors' : 'no-cors'
        h['sec-fetch-site'] = extra?.referer === undefined ? 'none' : 'same-origin'
      }
      if (dest === 'document') h['upgrade-insecure-requests'] = '1'
      return extra === undefined ? h : Object.assign(h, extra)
    },
  }
}

/** HTTP libraries and command-line tools: what integrations use, and what naive attackers leave in place. */
export const TOOL_AGENTS = [
  'python-requests/2.31.0',
  'python-requests/2.32.3',
  'curl/8.5.0',
  'curl/7.88.1',
  'Wget/1.21.4',
  'Go-http-client/1.1',
  'Go-http-client/2.0',
  'okhttp/4.12.0',
  'axios/1.7.2',
  'node-fetch/1.0 (+https://github.com/bitinn/node-fetch)',
  'Java/17.0.9',
  'Apache-HttpClient/4.5.14 (Java/17.0.9)',
  'aiohttp/3.9.5',
  'libwww-perl/6.72',
  'PostmanRuntime/7.39.0',
]

/** Integrations that call the API on a schedule: some with a product name, many with their library's. */
export const POLLER_AGENTS = [
  ...TOOL_AGENTS.slice(0, 12),
  'acme-inventory-sync/3.2.1',
  'Prometheus/2.51.0',
  'Grafana/10.4.1',
  'Zapier',
  'HubSpot Connect 2.0 (https://www.hubspot.com/)',
]

/** Scraping tools as they ship. */
export const SCRAPER_AGENTS = [
  'Scrapy/2.11.2 (+https://scrapy.org)',
  'python-requests/2.31.0',
  'python-httpx/0.27.0',
  'curl/8.5.0',
  'Wget/1.21.4',
  'Go-http-client/1.1',
  'colly - https://github.com/gocolly/colly',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36',
]

/** Scanners: their own names, or the stale browser string many of them send. */
export const SCANNER_AGENTS = [
  'Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)',
  'Mozilla/5.0 zgrab/0.x',
  'Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:Port Check)',
  'Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)',
  'Fuzz Faster U Fool v2.1.0-dev',
  'gobuster/3.6',
  'Go-http-client/1.1',
  'python-requests/2.28.1',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.129 Safari/537.36',
]

/** Search engines' crawlers; a real deployment would verify them by reverse DNS, the simulator takes the word. */
export const CRAWLERS = [
  {
    ua: 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
    from: 'googlebot(at)googlebot.com',
  },
  { ua: 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)' },
  { ua: 'Mozilla/5.0 (compatible; DuckDuckBot-Https/1.1; https://duckduckgo.com/duckduckbot)' },
  { ua: 'Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)' },
  {
    ua: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)',
  },
]

const PROBES = [
  '/.env',
  '/.env.bak',
  '/.env.production',
  '/.git/config',
  '/.git/HEAD',
  '/.svn/entries',
  '/.DS_Store',
  '/.aws/credentials',
  '/.ssh/id_rsa',
  '/.vscode/sftp.json',
  '/wp-login.php',
  '/wp-admin/',
  '/wp-admin/admin-ajax.php',
  '/wp-content/plugins/',
  '/wp-includes/wlwmanifest.xml',
  '/xmlrpc.php',
  '/wp-config.php.bak',
  '/phpmyadmin/',
  '/pma/',
  '/myadmin/',
  '/admin',
  '/admin/login',
  '/administrator/',
  '/manager/html',
  '/server-status',
  '/actuator',
  '/actuator/env',
  '/actuator/health',
  '/api/v1/users',
  '/api/swagger.json',
  '/swagger-ui.html',
  '/v2/api-docs',
  '/graphql',
  '/console',
  '/debug/pprof/',
  '/config.json',
  '/config.php',
  '/config.yml',
  '/backup.zip',
  '/backup.sql',
  '/db.sql',
  '/dump.sql',
  '/site.tar.gz',
  '/etc/passwd',
  '/cgi-bin/test.cgi',
  '/cgi-bin/luci',
  '/shell.php',
  '/cmd.php',
  '/test.php',
  '/info.php',
  '/phpinfo.php',
  '/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php',
  '/solr/admin/',
  '/jenkins/login',
  '/owa/auth/logon.aspx',
  '/remote/login',
  '/boaform/admin/formLogin',
  '/HNAP1/',
  '/login.action',
  '/telescope/requests',
  '/_ignition/health-check',
  '/storage/logs/laravel.log',
  '/docker-compose.yml',
  '/Dockerfile',
  '/package.json',
  '/composer.json',
  '/web.config',
  '/sitemap.xml',
  '/old/',
  '/bak/',
  '/dev/',
  '/staging/',
  '/uploads/',
  '/private/',
]
const PROBE_DIRS = ['', '', '', '/blog', '/wordpress', '/wp', '/old', '/app', '/backup', '/test']

/** Every path a scanner of this simulator may try: the probes, bare and under a few directories. */
export const PROBE_PATHS = PROBE_DIRS.flatMap((dir) => PROBES.map((p) => `${dir}${p}`)).filter(
  (p, i, all) => all.indexOf(p) === i,
)

/** First octets of the address pools; disjoint, so an attacker never shares a /24 with a benign client. */
const BENIGN_V4 = [
  24, 31, 37, 46, 62, 68, 73, 77, 81, 86, 88, 90, 94, 98, 109, 151, 176, 178, 188, 212, 213, 217,
]
const ATTACKER_V4 = [5, 45, 91, 103, 141, 185, 193, 194, 195]
const PROXY_V4 = [
  2, 14, 27, 36, 39, 41, 49, 58, 60, 101, 102, 112, 113, 117, 119, 120, 122, 123, 125, 171, 175, 177, 179,
  180, 181, 186, 187, 189, 190, 191, 197, 200, 201,
]
const BENIGN_V6 = ['2a02', '2a01', '2600', '2003']
const ATTACKER_V6 = ['2a0e', '2602']

/**
 * The addresses of one run: benign clients, attackers and the residential
 * proxies of a distributed campaign come from disjoint ranges; no address is
 * handed out twice; `fresh` ones (the campaign's) each sit in a /24 (IPv6: a
 * /48) nobody else has.
 *
 * @example
 * const pool = createAddressPool(seed)
 * pool.benign() // '77.18.203.41'
 * pool.attacker({ v6: true }) // '2a0e:1c3:9a0::4f2'
 */
export function createAddressPool(seed) {
  const r = createRandom(seed)
  const used = new Set()
  const prefixes = new Set()
  const v4 = (octets, fresh) => {
    for (;;) {
      const prefix = `${r.pick(octets)}.${r.int(0, 255)}.${r.int(0, 255)}`
      if (fresh && prefixes.has(prefix)) continue
      const address = `${prefix}.${r.int(1, 254)}`
      if (used.has(address)) continue
      used.add(address)
      prefixes.add(prefix)
      return address
    }
  }
  const v6 = (heads) => {
    for (;;) {
      const prefix = `${r.pick(heads)}:${r.int(0x100, 0xffff).toString(16)}:${r.int(0, 0xffff).toString(16)}`
      if (prefixes.has(prefix)) continue
      const address = `${prefix}:${r.int(0, 0xffff).toString(16)}::${r.int(1, 0xffff).toString(16)}`
      used.add(address)
      prefixes.add(prefix)
      return address
    }
  }
  return {
    benign: ({ v6: six = false } = {}) => (six ? v6(BENIGN_V6) : v4(BENIGN_V4, false)),
    attacker: ({ v6: six = false } = {}) => (six ? v6(ATTACKER_V6) : v4(ATTACKER_V4, false)),
    proxy: () => v4(PROXY_V4, true),
  }
}
