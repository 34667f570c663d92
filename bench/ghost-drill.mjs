/**
 * The outage drill (`node bench/ghost-drill.mjs`): what clients get from a
 * caching proxy while its only backend is down, Aegis' gateway (with its ghost
 * cache when it has one) beside nginx with `proxy_cache_use_stale`.
 *
 * One backend process serves `/item/0` … `/item/49` (a few hundred bytes of
 * JSON each, `Cache-Control: max-age=1`). For each proxy and each fault, a
 * fresh proxy is started, learns the 50 answers (each fetched twice), waits
 * until they are stale, and then the backend fails one way:
 *
 * - `refuse`: it stops listening and drops its connections (ECONNREFUSED);
 * - `500`: it answers every request 500;
 * - `hang`: it accepts connections and reads requests, and never answers.
 *
 * `--clients` keep-alive clients (default 10) then ask for random items for
 * `--duration` seconds (default 12), one request at a time each; every answer's
 * status, latency (request sent → body read) and stale marker is recorded
 * (Aegis: `X-Aegis-Ghost: 1`; nginx: `X-Cache-Status` STALE or UPDATING). A
 * request still open when the window ends is cut and counted apart. Then the
 * backend is restored and the proxy stopped.
 *
 * Proxies: nginx with its default timeouts, nginx with 1 s timeouts, and Aegis
 * (`createAegis(AEGIS_DRILL_OPTIONS).handler()` on node:http, in a process of
 * its own). Aegis' whole configuration is AEGIS_DRILL_OPTIONS below.
 * Everything listens on 127.0.0.1; children, nginx and
 * its temporary directory are removed on exit, on error and on Ctrl-C.
 *
 * Method and caveats: bench/README.md ("The outage drill").
 */
import { setMaxListeners } from 'node:events'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { importAegis } from './lib/aegis.mjs'
import { scriptArgs } from './lib/args.mjs'
import { buildPackages, checkBuilt, environmentInfo, sourceState } from './lib/build.mjs'
import { spawnServer } from './lib/children.mjs'
import { nginxVersion, startNginx } from './lib/nginx.mjs'

// ─────────────────────────────────────────────────────────────────────────────
// THE AEGIS SIDE OF THE DRILL — its whole configuration, here and nowhere else.
// The single proxy route gets `upstreams: [<the drill's backend>]` added at start.
// ─────────────────────────────────────────────────────────────────────────────
export const AEGIS_DRILL_OPTIONS = {
  // Serve learned answers while the upstream fails, for up to an hour past their freshness.
  ghost: { maxStale: 3600 },
  // Every drill client comes from 127.0.0.1: the default per-client limit would answer 429.
  limiter: false,
  breaker: {
    // Opens after a few failures: 5 requests in the window, half of them failed.
    volumeThreshold: 5,
    errorThresholdPercentage: 50,
    // A short window, so the ~100 successes of the learning phase (1.5 s earlier) have left it
    // by the time the first timeouts come; with 10 s they would hold it closed for 100 failures.
    rollingCountTimeout: 2_000,
    // One probe upstream every 5 s while open.
    resetTimeout: 5_000,
  },
  proxy: [
    {
      prefix: '/',
      // The upstream timeout: as nginx' 1 s variant (connect, and request sent → response headers).
      timeouts: { connect: 1_000, headers: 1_000 },
    },
  ],
}

const ITEMS = 50
const FAULTS = ['refuse', '500', 'hang']
/** The targets, for 12 s of 10 clients; the count scales with `--duration`. */
const TARGET = { p99Ms: 5, hangP50Ms: 5, hangAnswersPer12s: 10_000 }
const LEARN_PASSES = 2
/**
 * The wait after learning, so every answer (max-age=1) is stale when the fault starts. nginx keeps
 * expiry times in whole seconds: an answer stored at 100.9 s is fresh until 102.0 s, so a 1.5 s
 * wait left some of them fresh (HITs at the start of the window). 2.2 s leaves none.
 */
const STALE_WAIT_MS = 2_200
const LEARN_TIMEOUT_MS = 5_000
/** A pause after a failed request, so a client that fails at once does not spin. */
const ERROR_PAUSE_MS = 10

const SELF = fileURLToPath(import.meta.url)

/** The backend's answer for item `i`: a few hundred bytes of JSON, the same every time. */
export function itemBody(i) {
  return JSON.stringify({
    id: i,
    sku: `DRILL-${String(i).padStart(4, '0')}`,
    name: `Drill item number ${i}`,
    description:
      'A catalogue entry served by the outage drill backend; long enough to look like a real answer.',
    price: { amount: 1000 + i * 37, currency: 'EUR' },
    stock: (i * 7) % 23,
    tags: ['drill', i % 2 === 0 ? 'even' : 'odd', `group-${i % 5}`],
    updated: '2026-11-23T12:00:00.000Z',
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const listen = (server, port = 0) =>
  new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve(server)
    })
  })

// ─── Child processes: the backend and the Aegis proxy ───────────────────────

/**
 * The backend, with its fault switch (IPC `{ type: 'fault', mode }`, answered
 * `{ type: 'fault', mode }` once in effect): `ok`, `refuse`, `500`, `hang`.
 */
async function backendRole() {
  const bodies = Array.from({ length: ITEMS }, (_, i) => itemBody(i))
  const sockets = new Set()
  /** Requests of the `hang` mode: read, never answered, ended when the backend is restored. */
  const hung = new Set()
  let mode = 'ok'
  const server = createServer((req, res) => {
    if (mode === 'hang') {
      req.resume() // read the request to its end, and answer nothing
      hung.add(res.socket)
      return
    }
    if (mode === '500') {
      const body = '{"error":"the drill backend fails"}'
      res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      return res.end(body)
    }
    const m = /^\/item\/(\d+)$/.exec(req.url ?? '')
    const i = m === null ? -1 : Number(m[1])
    if (i < 0 || i >= ITEMS) {
      res.writeHead(404, { 'content-length': 0 })
      return res.end()
    }
    const body = bodies[i]
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'max-age=1',
    })
    res.end(body)
  })
  server.keepAliveTimeout = 60_000
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await listen(server)
  const { port } = server.address()

  const setMode = async (next) => {
    // Back to normal first: end the hung requests (the proxies see their connections close) and listen again.
    for (const socket of hung) socket.destroy()
    hung.clear()
    if (!server.listening) await listen(server, port)
    mode = next
    if (next === 'refuse') {
      // Stop listening (new connections are refused) and drop the open ones: a keep-alive
      // connection the proxy holds would otherwise still reach the backend.
      const closed = new Promise((resolve) => server.close(resolve))
      for (const socket of sockets) socket.destroy()
      await closed
    }
  }
  process.on('message', (message) => {
    if (message?.type !== 'fault') return
    setMode(message.mode).then(
      () => process.send({ type: 'fault', mode: message.mode }),
      (err) => process.send({ type: 'fault', mode: message.mode, error: String(err) }),
    )
  })
  return port
}

/** The Aegis gateway on a bare node:http server, forwarding everything to the backend. */
async function aegisRole(backendPort) {
  const { createAegis } = await importAegis('core')
  const backend = `http://127.0.0.1:${backendPort}`
  const withBackend = (options) => ({
    ...options,
    proxy: options.proxy.map((route) => ({ ...route, upstreams: [backend] })),
  })
  const shield = createAegis(withBackend(AEGIS_DRILL_OPTIONS))
  const server = createServer(shield.handler())
  shield.attach(server)
  await listen(server)
  return server.address().port
}

// ─── The proxies, from the runner ───────────────────────────────────────────

/** nginx as the drill's stale cache; `timeouts` are its proxy_*_timeout lines, or none for its defaults. */
const startNginxCache = (backendPort, timeouts) =>
  startNginx({
    name: 'ghost-drill',
    http: (dir) => [
      `proxy_cache_path ${dir}/cache levels=1:2 keys_zone=drill:1m max_size=16m inactive=1h use_temp_path=off;`,
      `upstream backend { server 127.0.0.1:${backendPort}; keepalive 16; }`,
    ],
    server: [
      'location / {',
      '  proxy_pass http://backend;',
      '  proxy_http_version 1.1;',
      '  proxy_set_header Connection "";',
      '  proxy_cache drill;',
      '  proxy_cache_valid 200 1s;',
      '  proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;',
      '  proxy_cache_background_update on;',
      '  proxy_cache_lock on;',
      '  add_header X-Cache-Status $upstream_cache_status always;',
      ...timeouts.map((t) => `  ${t}`),
      '}',
    ],
  })

async function startAegis(backendPort) {
  const server = await spawnServer({ script: SELF, args: ['aegis', String(backendPort)] })
  return { port: server.port, stop: server.stop }
}

/** The proxies the drill knows, in the order it runs them. */
const PROXIES = {
  'nginx-default': {
    label: 'nginx, default timeouts',
    marker: 'x-cache-status',
    stale: (value) => value === 'STALE' || value === 'UPDATING',
    start: (backendPort) => startNginxCache(backendPort, []),
  },
  'nginx-1s': {
    label: 'nginx, 1 s timeouts',
    marker: 'x-cache-status',
    stale: (value) => value === 'STALE' || value === 'UPDATING',
    start: (backendPort) =>
      startNginxCache(backendPort, [
        'proxy_connect_timeout 1s;',
        'proxy_read_timeout 1s;',
        'proxy_send_timeout 1s;',
      ]),
  },
  aegis: {
    label: 'Aegis',
    marker: 'x-aegis-ghost',
    stale: (value) => value === '1',
    start: startAegis,
  },
}

// ─── The drill ──────────────────────────────────────────────────────────────

const bodies = Array.from({ length: ITEMS }, (_, i) => itemBody(i))

/** GET every item `LEARN_PASSES` times through the proxy: each must be 200 with its body. */
async function learn(origin) {
  const pool = new Pool(origin, {
    connections: 1,
    headersTimeout: LEARN_TIMEOUT_MS,
    bodyTimeout: LEARN_TIMEOUT_MS,
  })
  try {
    for (let pass = 1; pass <= LEARN_PASSES; pass++) {
      for (let i = 0; i < ITEMS; i++) {
        const res = await pool.request({ path: `/item/${i}`, method: 'GET' })
        const text = await res.body.text()
        if (res.statusCode !== 200 || text !== bodies[i])
          throw new Error(
            `learning: GET /item/${i} (pass ${pass}) answered ${res.statusCode}, ${text.length} bytes`,
          )
      }
    }
  } finally {
    await pool.destroy()
  }
}

/** Milliseconds to the microsecond: the raw JSON stays readable and a third of the size. */
const us = (ms) => Math.round(ms * 1000) / 1000

/** Nearest-rank percentile of sorted numbers. */
const percentile = (sorted, p) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]

/**
 * `clients` keep-alive clients, each one request at a time to a random item,
 * for `duration` seconds; requests open when the window closes are aborted
 * and counted as `cut`.
 */
async function hammer(origin, { duration, clients, marker }) {
  const windowMs = duration * 1000
  const pool = new Pool(origin, {
    connections: clients,
    pipelining: 1,
    keepAliveTimeout: windowMs + 10_000,
    headersTimeout: windowMs + 5_000,
    bodyTimeout: windowMs + 5_000,
  })
  const stop = new AbortController()
  setMaxListeners(clients + 10, stop.signal) // each open request listens to it
  const timer = setTimeout(() => stop.abort(), windowMs)
  const t0 = performance.now()
  /**
   * One per finished request: [start ms into the window, item, status (0: error, 'wrong-body'), ms,
   * the marker header's value ('' without one), error code (errors only)].
   */
  const requests = []
  let cut = 0
  const worker = async () => {
    while (!stop.signal.aborted) {
      const item = Math.floor(Math.random() * ITEMS)
      const start = performance.now()
      try {
        const res = await pool.request({ path: `/item/${item}`, method: 'GET', signal: stop.signal })
        const text = await res.body.text()
        const ms = performance.now() - start
        const status = res.statusCode === 200 && text !== bodies[item] ? 'wrong-body' : res.statusCode
        const mark = res.headers[marker]
        requests.push([us(start - t0), item, status, us(ms), typeof mark === 'string' ? mark : ''])
      } catch (err) {
        if (stop.signal.aborted) {
          cut++
          break
        }
        const ms = us(performance.now() - start)
        requests.push([us(start - t0), item, 0, ms, '', err?.code ?? err?.name ?? 'error'])
        await sleep(ERROR_PAUSE_MS)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: clients }, worker))
  } finally {
    clearTimeout(timer)
    await pool.destroy()
  }
  return { requests, cut }
}

/** What one run's requests amount to, and whether the targets were met. */
function summarize(fault, { requests, cut }, duration, stale) {
  const answered = requests.filter((r) => r[2] !== 0) // a wrong body is an answer, not a 200
  const ok = answered.filter((r) => r[2] === 200)
  const latencies = answered.map((r) => r[3]).sort((a, b) => a - b)
  const statuses = {}
  /** The marker header's values over the answers (nginx: HIT, STALE, UPDATING…). */
  const markers = {}
  for (const r of answered) markers[r[4] || '(none)'] = (markers[r[4] || '(none)'] ?? 0) + 1
  for (const r of requests) {
    const key = r[2] === 0 ? `error ${r[5]}` : String(r[2])
    statuses[key] = (statuses[key] ?? 0) + 1
  }
  const failed = requests.length - ok.length // errors, wrong bodies and every status but 200
  const s = {
    answers: answered.length,
    ok: ok.length,
    pct200: requests.length === 0 ? 0 : (100 * ok.length) / requests.length,
    marked: answered.filter((r) => stale(r[4])).length,
    markers,
    errors: requests.length - answered.length,
    cut,
    statuses,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies.at(-1) ?? Number.NaN,
  }
  if (fault === 'hang') {
    const minOk = Math.round((TARGET.hangAnswersPer12s * duration) / 12)
    s.target = `≥ ${minOk.toLocaleString('en-US')} answered 200, p50 ≤ ${TARGET.hangP50Ms} ms`
    s.met = s.ok >= minOk && s.p50 <= TARGET.hangP50Ms
  } else {
    s.target = `100% answered 200, p99 ≤ ${TARGET.p99Ms} ms`
    s.met = requests.length > 0 && failed === 0 && s.p99 <= TARGET.p99Ms
  }
  return s
}

async function drill(name, fault, backend, options) {
  const proxy = PROXIES[name]
  const started = await proxy.start(backend.port)
  try {
    const origin = `http://127.0.0.1:${started.port}`
    await learn(origin)
    await sleep(STALE_WAIT_MS)
    const set = await backend.ask({ type: 'fault', mode: fault }, 'fault')
    if (set.error !== undefined) throw new Error(`backend fault ${fault}: ${set.error}`)
    // The backend is restored whatever happened to the load, before any error goes on.
    const load = await hammer(origin, { ...options, marker: proxy.marker }).catch((err) => err)
    const back = await backend.ask({ type: 'fault', mode: 'ok' }, 'fault')
    if (back.error !== undefined) throw new Error(`backend restore: ${back.error}`)
    if (load instanceof Error) throw load
    return {
      proxy: name,
      label: proxy.label,
      fault,
      ...(started.config !== undefined && { nginxConfig: started.config }),
      ...summarize(fault, load, options.duration, proxy.stale),
      requests: load.requests,
    }
  } finally {
    await started.stop()
  }
}

const USAGE = `Usage: node bench/ghost-drill.mjs [options]

  --duration S     seconds of load per fault (default 12)
  --clients N      concurrent keep-alive clients (default 10)
  --only P         nginx (both timeout settings) or aegis; default both
  --faults a,b     some of: ${FAULTS.join(', ')} (default all)
  --json FILE      write every run, with every request, to FILE
  --skip-build     use the packages' existing dist/ (Aegis)
  -h, --help       this text`

const fmtMs = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—')
const fmtInt = (x) => x.toLocaleString('en-US')

function markdown(runs, options) {
  const lines = [
    `| Proxy | Fault | Answers | % 200 | Stale/ghost | Errors | Cut at end | p50 ms | p99 ms | max ms | Target | Met |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | :---: |',
  ]
  for (const r of runs) {
    if (r.failed !== undefined) {
      const why = r.failed.split('\n')[0].replace(/\|/g, '\\|')
      lines.push(`| ${r.label} | ${r.fault} | FAILED: ${why} | ${Array(7).fill('—').join(' | ')} | — | no |`)
      continue
    }
    lines.push(
      `| ${r.label} | ${r.fault} | ${fmtInt(r.answers)} | ${r.pct200.toFixed(1)} | ${fmtInt(r.marked)} | ${fmtInt(r.errors)} | ${r.cut} | ${fmtMs(r.p50)} | ${fmtMs(r.p99)} | ${fmtMs(r.max)} | ${r.target} | ${r.met ? 'yes' : 'no'} |`,
    )
  }
  const counts = (o) =>
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} × ${fmtInt(n)}`)
      .join(', ')
  const statuses = runs
    .filter((r) => r.failed === undefined)
    .map(
      (r) =>
        `- ${r.label}, ${r.fault}: ${counts(r.statuses)}; ${PROXIES[r.proxy].marker}: ${counts(r.markers)}`,
    )
  return `## Outage drill: ${options.clients} clients × ${options.duration} s per fault\n\n${lines.join('\n')}\n\nStatuses, and the marker header's values over the answers:\n\n${statuses.join('\n')}\n`
}

async function main() {
  const { values } = parseArgs({
    args: scriptArgs(),
    options: {
      duration: { type: 'string', default: '12' },
      clients: { type: 'string', default: '10' },
      only: { type: 'string' },
      faults: { type: 'string' },
      json: { type: 'string' },
      'skip-build': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return console.log(USAGE)
  const int = (name, min, max) => {
    const n = Number(values[name])
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`--${name} must be an integer from ${min} to ${max}`)
    return n
  }
  const options = { duration: int('duration', 1, 600), clients: int('clients', 1, 1000) }
  const groups = { nginx: ['nginx-default', 'nginx-1s'], aegis: ['aegis'] }
  if (values.only !== undefined && groups[values.only] === undefined)
    throw new Error(`--only takes nginx or aegis, not ${values.only}`)
  let selected = values.only === undefined ? Object.keys(PROXIES) : groups[values.only]
  const faults = values.faults === undefined ? FAULTS : values.faults.split(',').map((f) => f.trim())
  const unknown = faults.filter((f) => !FAULTS.includes(f))
  if (unknown.length > 0)
    throw new Error(`unknown fault(s): ${unknown.join(', ')}; known: ${FAULTS.join(', ')}`)

  const nginx = nginxVersion()
  if (nginx === undefined && selected.some((p) => p.startsWith('nginx'))) {
    console.log('nginx not found (apt-get install -y nginx): its runs are skipped')
    selected = selected.filter((p) => !p.startsWith('nginx'))
  }
  if (selected.length === 0) throw new Error('nothing to run')
  if (selected.includes('aegis')) {
    if (!values['skip-build']) await buildPackages()
    checkBuilt()
  }
  const environment = { ...environmentInfo(), nginx: nginx ?? 'absent' }
  const source = await sourceState()
  console.log(
    `${selected.length} proxies × ${faults.length} faults × ${options.duration} s, ${options.clients} clients; ` +
      `Node ${process.version}, ${environment.cpus} CPUs, ${environment.nginx}.`,
  )

  const backend = await spawnServer({ script: SELF, args: ['backend'] })
  const runs = []
  try {
    for (const name of selected) {
      for (const fault of faults) {
        const run = await drill(name, fault, backend, options).catch((err) => ({
          proxy: name,
          label: PROXIES[name].label,
          fault,
          failed: err.message,
        }))
        runs.push(run)
        console.log(
          run.failed === undefined
            ? `${run.label.padEnd(40)} ${fault.padEnd(6)} ${fmtInt(run.answers).padStart(7)} answers, ` +
                `${run.pct200.toFixed(1)}% 200, p50 ${fmtMs(run.p50)} ms, p99 ${fmtMs(run.p99)} ms, max ${fmtMs(run.max)} ms`
            : `${run.label.padEnd(40)} ${fault.padEnd(6)} FAILED: ${run.failed}`,
        )
      }
    }
  } finally {
    await backend.stop()
  }

  console.log(`\n${markdown(runs, options)}`)
  if (values.json !== undefined) {
    environment.loadavgAtEnd = loadavg()
    const out = {
      command: ['node', 'bench/ghost-drill.mjs', ...process.argv.slice(2)].join(' '),
      options: { ...options, faults, proxies: selected },
      targets: TARGET,
      aegisOptions: AEGIS_DRILL_OPTIONS,
      environment,
      source,
      requestFields: ['startMs', 'item', 'status (0: error)', 'ms', 'marker header value', 'errorCode'],
      runs,
    }
    writeFileSync(values.json, `${JSON.stringify(out)}\n`)
    console.log(`Raw results: ${values.json}`)
  }
  if (runs.some((r) => r.failed !== undefined)) process.exitCode = 1
}

// `node ghost-drill.mjs backend|aegis <backendPort>` with an IPC channel: a child of the runner.
const role = process.send === undefined ? undefined : process.argv[2]
if (role === 'backend' || role === 'aegis') {
  const port = role === 'backend' ? await backendRole() : await aegisRole(Number(process.argv[3]))
  process.on('disconnect', () => process.exit(0)) // the runner is gone
  process.send({ type: 'ready', port })
} else {
  await main()
}
