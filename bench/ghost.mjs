/**
 * The ghost cache's costs (`node bench/ghost.mjs`), on the Aegis gateway
 * (`createAegis(options).handler()` on a bare node:http server, in a process of
 * its own) in front of one loopback backend answering `/small…` (17 bytes of
 * JSON) and `/large…` (100 KiB), both with `Cache-Control: max-age=60`.
 *
 * 1. Learning: the proxy's CPU time per request (its own `process.cpuUsage()`,
 *    read over IPC around the measured window) and req/s, ghost off against
 *    `ghost: true`, on one URL (its entry re-learned and replaced by every
 *    answer) and on distinct URLs (every answer a new entry; the store full,
 *    its least recently used entry out). wrk -t1, interleaved rounds.
 * 2. Serving: the same gateway with its only backend down after it learned the
 *    URL: its breaker open (the defaults), or without a breaker (every request
 *    refused by the backend's closed port); req/s against a live proxied request
 *    with the ghost off, in the same round.
 * 3. The memory store's bound: a proxy run with --expose-gc learns N distinct
 *    100 KiB answers (default 10,000), driven by an undici Pool; every 1,000 the
 *    proxy collects garbage twice and reports its memory and the store's own
 *    byte count. The same with the ghost off is the control.
 * 4. Instructions (`--parts instructions`, not by default): the learning variants'
 *    proxies under callgrind, counted once warm — a cross-check that the machine's
 *    load does not move.
 *
 * Everything listens on 127.0.0.1; children are killed on exit, error and
 * Ctrl-C. Method and caveats: bench/README.md ("The ghost cache").
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, createServer, get } from 'node:http'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { importAegis } from './lib/aegis.mjs'
import { scriptArgs } from './lib/args.mjs'
import { buildPackages, checkBuilt, distFingerprint, environmentInfo, sourceState } from './lib/build.mjs'
import { pinProcessTree, spawnServer, spawnTracked } from './lib/children.mjs'
import { generators, getWhole, problemsOf } from './lib/load.mjs'
import { summarizeProfile } from './lib/profile.mjs'
import { median } from './lib/report.mjs'

const SELF = fileURLToPath(import.meta.url)
const RESULTS = fileURLToPath(new URL('results/', import.meta.url))

/** The backend's answers: 17 bytes of JSON and 100 KiB, each fresh for a minute. */
const SMALL = JSON.stringify({ hello: 'world' })
const LARGE_BYTES = 100 * 1024
const CACHE_CONTROL = 'max-age=60'
const BODIES = ['small', 'large']

/**
 * The gateway's options: Aegis' defaults (security headers, hardening, metrics, a
 * breaker and retries per upstream), as bench/gateway.mjs runs them, but the limiter
 * (wrk is one client). `backend` is filled in at start.
 */
const CONFIGS = {
  off: (backend) => ({ limiter: false, proxy: [{ prefix: '/', upstreams: [backend] }] }),
  ghost: (backend) => ({ limiter: false, ghost: true, proxy: [{ prefix: '/', upstreams: [backend] }] }),
  // No breaker: every request tries the upstream, is refused, and gets the ghost's answer.
  'ghost-nobreaker': (backend) => ({
    limiter: false,
    ghost: true,
    proxy: [{ prefix: '/', upstreams: [backend], breaker: false }],
  }),
}

/**
 * What each variant runs: the proxy's options, one URL or distinct ones (wrk
 * builds each request's path), and whether its backend is down while measured.
 */
const VARIANTS = {
  off: { config: 'off', label: 'ghost off, one URL' },
  'learn-same': { config: 'ghost', label: 'ghost on, one URL (re-learned once a second)' },
  'off-distinct': { config: 'off', distinct: true, label: 'ghost off, distinct URLs' },
  'learn-distinct': { config: 'ghost', distinct: true, label: 'ghost on, distinct URLs (a new entry each)' },
  'serve-open': { config: 'ghost', down: true, label: 'ghost answers, backend down, breaker open' },
  'serve-refused': {
    config: 'ghost-nobreaker',
    down: true,
    label: 'ghost answers, backend down, no breaker (each request refused)',
  },
}
const PARTS = {
  learn: ['off', 'learn-same', 'off-distinct', 'learn-distinct'],
  serve: ['off', 'serve-open', 'serve-refused'],
  memory: [],
  instructions: [],
}
/**
 * Part `instructions`: requests before counting and requests counted, under callgrind. The
 * warm-up of the distinct-URL variants fills the store (10,000 entries of 17 B; 654 of
 * 100 KiB in 64 MiB) so that every answer counted evicts one.
 */
const INSTRUCTION_PLAN = {
  small: { one: { warmup: 10_000, measured: 2_000 }, distinct: { warmup: 12_000, measured: 2_000 } },
  large: { one: { warmup: 4_000, measured: 600 }, distinct: { warmup: 4_000, measured: 600 } },
}
const CALLGRIND_TIMEOUT_MS = 900_000

/** The issue's targets. */
const TARGETS = { learnCpuRatio: 1.05, serveRatio: 2 }
/**
 * Comparisons, paired by round: `kind` cpu (µs/req ratio, at most the target), rate (req/s
 * ratio, at least), or capacity (the base's µs/req over the variant's: how many more
 * requests the proxy's CPU time would serve, whatever else the machine runs).
 */
const CLAIMS = [
  { variant: 'learn-same', base: 'off', kind: 'cpu', target: TARGETS.learnCpuRatio },
  { variant: 'learn-distinct', base: 'off-distinct', kind: 'cpu', target: TARGETS.learnCpuRatio },
  { variant: 'learn-same', base: 'off', kind: 'rate' },
  { variant: 'learn-distinct', base: 'off-distinct', kind: 'rate' },
  { variant: 'serve-open', base: 'off', kind: 'rate', target: TARGETS.serveRatio },
  { variant: 'serve-open', base: 'off', kind: 'capacity' },
  { variant: 'serve-refused', base: 'off', kind: 'rate' },
  { variant: 'serve-refused', base: 'off', kind: 'capacity' },
]
/**
 * What the memory store may hold beyond its `maxBytes` of counted bytes (bodies and fields):
 * each entry's JavaScript objects (the entry, its fields' record, its Vary arrays, the
 * store's variant array and lru-cache's slot), about a kilobyte each for the ~650 entries
 * of 100 KiB that 64 MiB holds. Stated here, asserted in part 3.
 */
const MEMORY_OVERHEAD_BYTES = 4 * 1024 * 1024
const MEMORY_MAX_BYTES = 64 * 1024 * 1024 // the store's default maxBytes, which `ghost: true` keeps
const MEMORY_STEP = 1_000
const MEMORY_CONCURRENCY = 8
const MEMORY_TIMEOUT_MS = 10_000

const USAGE = `Usage: node bench/ghost.mjs [options]

  --rounds N        interleaved rounds (default 5)
  --duration S      seconds of load per run (default 5)
  --warmup S        seconds of unmeasured load first (default 2)
  --connections C   wrk connections (default 50)
  --parts a,b       learn, serve, memory (default all three), instructions (callgrind, about 25 min)
  --only a,b        these variants only (of ${Object.keys(VARIANTS).join(', ')})
  --bodies a,b      small, large (default both)
  --entries N       distinct 100 KiB answers learned in the memory part (default 10000)
  --pin             the proxy on CPU 1, wrk and the backend on CPU 0 (taskset; needs 2+ CPUs)
  --cpu-prof DIR    run every proxy under --cpu-prof, profiles into DIR, and print where its time went
  --skip-build      measure the packages' existing dist/
  -h, --help        this text`

// ─── Child processes: the backend and the proxy ─────────────────────────────

const listen = (server) =>
  new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve(server)
    })
  })

/** `/large…` answers 100 KiB, anything else the small JSON; keep-alive, a minute fresh. */
async function backendRole() {
  const large = Buffer.alloc(LARGE_BYTES, 0x61)
  const server = createServer((req, res) => {
    const big = req.url?.startsWith('/large') === true
    res.writeHead(200, {
      'content-type': big ? 'application/octet-stream' : 'application/json',
      'content-length': big ? LARGE_BYTES : Buffer.byteLength(SMALL),
      'cache-control': CACHE_CONTROL,
    })
    res.end(big ? large : SMALL)
  })
  server.keepAliveTimeout = 60_000
  await listen(server)
  return server.address().port
}

/** The ghost's counters from the proxy's own metrics: serves by reason, learned, refusals by reason. */
async function ghostFigures(shield) {
  const metrics = shield.metrics
  const read = async (name, by) => {
    const metric = metrics?.registry.getSingleMetric(`${metrics.prefix}${name}`)
    const out = {}
    for (const v of (await metric?.get())?.values ?? []) {
      const key = by === undefined ? 'all' : String(v.labels[by])
      out[key] = (out[key] ?? 0) + v.value
    }
    return out
  }
  return {
    served: await read('ghost_serves_total', 'reason'),
    learned: (await read('ghost_learned_total')).all ?? 0,
    refused: await read('ghost_refusals_total', 'reason'),
    store: shield.ghost?.store.stats?.(),
  }
}

/** The Aegis gateway on node:http, its one route sent to the backend. */
async function startProxy(backendPort, config) {
  const { createAegis } = await importAegis('core')
  const shield = createAegis(CONFIGS[config](`http://127.0.0.1:${backendPort}`))
  const server = createServer(shield.handler())
  shield.attach(server)
  await listen(server)
  return { shield, server }
}

/** The proxy as a child of the runner: its CPU, the ghost's counters and its memory over IPC. */
async function proxyRole(backendPort, config) {
  const { shield, server } = await startProxy(backendPort, config)
  const send = (promise) =>
    promise.then(process.send.bind(process), (err) => process.send({ type: 'error', error: String(err) }))
  process.on('message', (message) => {
    if (message === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage() })
    else if (message === 'ghost') send(ghostFigures(shield).then((f) => ({ type: 'ghost', ...f })))
    else if (message === 'memory') {
      // Two full collections: what is left is what is held (the runner starts this child with --expose-gc).
      globalThis.gc()
      globalThis.gc()
      process.send({
        type: 'memory',
        usage: { ...process.memoryUsage(), maxRss: process.resourceUsage().maxRSS * 1024 },
        store: shield.ghost?.store.stats?.(),
      })
    }
  })
  return server.address().port
}

// ─── The runner ─────────────────────────────────────────────────────────────

/** GET `url`: 200 and the backend's exact body; `fromGhost`: answered by the ghost (`X-Aegis-Ghost: 1`). */
async function check(url, body, fromGhost = false) {
  const { status, headers, body: got } = await getWhole(url)
  const ok =
    status === 200 &&
    (body === 'large' ? got.length === LARGE_BYTES : got.toString() === SMALL) &&
    (!fromGhost || headers['x-aegis-ghost'] === '1')
  if (!ok)
    throw new Error(
      `GET ${url}: ${status}, ${got.length} bytes, X-Aegis-Ghost ${headers['x-aegis-ghost'] ?? 'absent'}` +
        (fromGhost ? ' (expected an answer from the ghost)' : ''),
    )
}

/** Sum of a count object's values (`{ unavailable: 3, error: 1 }` → 4). */
const total = (counts) => Object.values(counts ?? {}).reduce((s, n) => s + n, 0)
/** `after − before` of each key. */
const delta = (after, before) =>
  Object.fromEntries(Object.entries(after ?? {}).map(([k, v]) => [k, v - (before?.[k] ?? 0)]))

async function main() {
  const { values } = parseArgs({
    args: scriptArgs(),
    options: {
      rounds: { type: 'string', default: '5' },
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '50' },
      parts: { type: 'string', default: 'learn,serve,memory' },
      only: { type: 'string' },
      bodies: { type: 'string', default: BODIES.join(',') },
      entries: { type: 'string', default: '10000' },
      pin: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'skip-build': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return console.log(USAGE)
  const int = (name, min) => {
    const n = Number(values[name])
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer of at least ${min}`)
    return n
  }
  const list = (name, known) => {
    const names = values[name].split(',').map((s) => s.trim())
    const unknown = names.filter((n) => !known.includes(n))
    if (unknown.length > 0)
      throw new Error(`--${name}: unknown ${unknown.join(', ')}; known: ${known.join(', ')}`)
    return names
  }
  const rounds = int('rounds', 1)
  const duration = int('duration', 1)
  const warmup = int('warmup', 0)
  const connections = int('connections', 1)
  const entries = int('entries', 1)
  const parts = list('parts', Object.keys(PARTS))
  const bodies = list('bodies', BODIES)
  // The wrk runs: the variants of the parts chosen (learn, serve), or those of them `--only` names.
  const only = values.only === undefined ? Object.keys(VARIANTS) : list('only', Object.keys(VARIANTS))
  const selected = only.filter((v) => parts.some((p) => PARTS[p].includes(v)))
  const profDir = values['cpu-prof']
  if (profDir !== undefined) mkdirSync(profDir, { recursive: true })

  if (selected.length > 0) await generators.wrk.check()
  const source = await sourceState()
  if (!values['skip-build']) await buildPackages()
  checkBuilt()
  const environment = {
    ...environmentInfo(),
    pinned: values.pin ? 'proxy on CPU 1; wrk and backend on CPU 0' : false,
  }
  const runSeconds = selected.length * bodies.length * rounds * (warmup + duration + 1.5)
  console.log(
    `${rounds} rounds × ${selected.length} variants × ${bodies.length} bodies × ${duration} s (+${warmup} s warm-up), ` +
      `${connections} connections, wrk -t1${values.pin ? ', pinned (proxy CPU 1, wrk and backend CPU 0)' : ''}` +
      `${parts.includes('memory') ? `; then ${entries.toLocaleString('en-US')} answers of 100 KiB, ghost on and off` : ''}` +
      `; about ${Math.ceil(runSeconds / 60 + (parts.includes('memory') ? 1 : 0) + (parts.includes('instructions') ? 4 : 0))} min. Node ${process.version}, ${environment.cpus} CPUs.`,
  )

  const scripts = mkdtempSync(join(tmpdir(), 'aegis-bench-ghost-'))
  process.on('exit', () => rmSync(scripts, { recursive: true, force: true }))
  let scriptCount = 0
  /** A wrk script whose every request asks a path never asked before (a fresh tag per wrk run). */
  const distinctScript = (path) => {
    const file = join(scripts, `distinct-${++scriptCount}.lua`)
    const tag = `${process.pid}-${scriptCount}`
    writeFileSync(
      file,
      `-- Every request a new URL: the ghost learns a new entry from each answer.
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "${path}?run=${tag}&n=" .. n)
end
`,
    )
    return file
  }
  const wrkCpus = values.pin ? '0' : undefined

  /** One measured run of `variant` with `body` answers. */
  async function measure(variant, body, backend, round) {
    const spec = VARIANTS[variant]
    // A backend of its own, stopped once the proxy has learned: its port then refuses connections.
    const own = spec.down ? await spawnServer({ script: SELF, args: ['backend'] }) : undefined
    let proxy
    try {
      const nodeArgs =
        profDir === undefined
          ? []
          : [
              '--cpu-prof',
              '--cpu-prof-dir',
              profDir,
              '--cpu-prof-name',
              `${variant}-${body}-r${round}.cpuprofile`,
            ]
      proxy = await spawnServer({
        script: SELF,
        args: ['proxy', String((own ?? backend).port), spec.config],
        nodeArgs,
      })
      if (values.pin) {
        pinProcessTree(proxy.pid, '1')
        if (own !== undefined) pinProcessTree(own.pid, '0')
      }
      const path = `/${body}`
      const url = `http://127.0.0.1:${proxy.port}${path}`
      await check(url, body) // learned here, when the ghost is on
      if (own !== undefined) {
        await own.stop()
        await check(url, body, true)
      }
      const ghostOn = spec.config !== 'off'
      const load = (seconds) =>
        generators.wrk.run({
          url,
          duration: seconds,
          connections,
          cpus: wrkCpus,
          ...(spec.distinct && { script: distinctScript(path) }),
        })
      if (warmup > 0) await load(warmup)
      const g0 = ghostOn ? await proxy.ask('ghost', 'ghost') : undefined
      const before = await proxy.cpuUsage()
      const result = await load(duration)
      const after = await proxy.cpuUsage()
      const g1 = ghostOn ? await proxy.ask('ghost', 'ghost') : undefined
      const problems = problemsOf(result)
      const cpuUs = after.user - before.user + (after.system - before.system)
      const ghost =
        g1 === undefined
          ? undefined
          : {
              served: delta(g1.served, g0.served),
              learned: g1.learned - g0.learned,
              refused: delta(g1.refused, g0.refused),
              store: g1.store,
            }
      // What the run is about must have happened: learning (a new URL on every answer; one URL kept
      // current, re-learned once a second), or the ghost answering every request.
      const mustLearn = variant === 'learn-same' ? Math.floor(duration) : 0.9 * result.requests
      if (ghost !== undefined && !spec.down && ghost.learned < mustLearn)
        problems.push(`learned ${ghost.learned} answers of ${result.requests}`)
      if (ghost !== undefined && spec.down && total(ghost.served) < 0.99 * result.requests)
        problems.push(`the ghost answered ${total(ghost.served)} of ${result.requests} requests`)
      return {
        ok: problems.length === 0,
        problems,
        ...result,
        cpuUsPerRequest: cpuUs / result.requests,
        ...(ghost !== undefined && { ghost }),
      }
    } finally {
      await proxy?.stop()
      await own?.stop()
    }
  }

  const runs = []
  let memory
  let instructions
  const backend = await spawnServer({ script: SELF, args: ['backend'] })
  if (values.pin) pinProcessTree(backend.pid, '0')
  try {
    for (let round = 1; round <= rounds && selected.length > 0; round++) {
      // Each round starts one variant later, as bench/gateway.mjs does.
      const order = selected.map((_, i) => selected[(i + round - 1) % selected.length])
      for (const body of bodies) {
        for (const variant of order) {
          const dist = distFingerprint()
          const r = await measure(variant, body, backend, round).catch((err) => ({
            ok: false,
            problems: [err.message],
          }))
          runs.push({ round, body, variant, dist, ...r })
          const served = r.ghost === undefined ? '' : ghostNote(r)
          console.log(
            `round ${round}/${rounds} ${body.padEnd(5)} ${variant.padEnd(15)} ` +
              (r.ok
                ? `${Math.round(r.reqPerSec).toLocaleString('en-US').padStart(7)} req/s  ${r.cpuUsPerRequest.toFixed(1).padStart(6)} µs CPU/req${served}`
                : `FAILED: ${r.problems.join('; ')}`),
          )
        }
      }
    }
    if (parts.includes('memory')) memory = await memoryPart(backend, entries)
    if (parts.includes('instructions')) {
      const learning = only.filter((v) => PARTS.learn.includes(v))
      instructions = await instructionsPart(backend, bodies, learning)
    }
  } finally {
    await backend.stop()
  }

  const summary = summarize(runs, selected, bodies)
  const claims = compareRuns(runs, selected, bodies)
  const profiles = profDir === undefined ? undefined : profileSummaries(profDir, runs)

  mkdirSync(RESULTS, { recursive: true })
  const file = `${RESULTS}ghost-${new Date().toISOString().replace(/[:.]/g, '-')}.json`
  environment.loadavgAtEnd = loadavg()
  const options = { rounds, duration, warmup, connections, parts, bodies, entries, pin: values.pin }
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        command: ['node', 'bench/ghost.mjs', ...process.argv.slice(2)].join(' '),
        options,
        configs: Object.fromEntries(
          Object.keys(CONFIGS).map((c) => [c, CONFIGS[c]('http://127.0.0.1:<backend>')]),
        ),
        variants: VARIANTS,
        targets: TARGETS,
        environment,
        source,
        summary,
        claims,
        memory,
        instructions,
        profiles,
        runs,
      },
      null,
      2,
    )}\n`,
  )

  console.log(`\n${markdownSummary(summary, rounds)}`)
  if (claims.length > 0) console.log(`\n${markdownClaims(claims)}`)
  if (memory !== undefined) console.log(`\n${markdownMemory(memory)}`)
  if (instructions !== undefined) console.log(`\n${markdownInstructions(instructions)}`)
  if (profiles !== undefined) console.log(`\n${markdownProfiles(profiles)}`)
  const failed = runs.filter((r) => !r.ok)
  for (const r of failed)
    console.log(`\nFAILED round ${r.round} ${r.body} ${r.variant}: ${r.problems.join('; ')}`)
  if (memory?.error !== undefined) console.log(`\nFAILED memory part: ${memory.error}`)
  if (instructions?.error !== undefined) console.log(`\nFAILED instructions part: ${instructions.error}`)
  console.log(`\nResults: ${file}`)
  if (
    failed.length > 0 ||
    memory?.error !== undefined ||
    memory?.met === false ||
    instructions?.error !== undefined
  )
    process.exitCode = 1
}

/** `, learned 98%` or `, ghost 100% (unavailable)` after a run's line. */
function ghostNote(r) {
  if (!r.ok) return ''
  const served = total(r.ghost.served)
  if (served > 0) {
    const reasons = Object.entries(r.ghost.served)
      .filter(([, n]) => n > 0)
      .map(([k]) => k)
      .join(', ')
    return `  ghost answered ${((100 * served) / r.requests).toFixed(0)}% (${reasons})`
  }
  return `  learned ${((100 * r.ghost.learned) / r.requests).toFixed(0)}%, store ${r.ghost.store?.entries ?? '?'} entries`
}

// ─── Part 3: the memory store's bound ───────────────────────────────────────

/**
 * Learn `entries` distinct 100 KiB answers through a proxy started with --expose-gc,
 * ghost on, then the same with the ghost off (the control): memory every
 * MEMORY_STEP answers, after two full collections.
 */
async function memoryPart(backend, entries) {
  const out = { entries, maxBytes: MEMORY_MAX_BYTES, overheadBytes: MEMORY_OVERHEAD_BYTES, runs: {} }
  try {
    for (const config of ['ghost', 'off']) {
      out.runs[config] = await memoryRun(config, backend, entries)
      const last = out.runs[config].samples.at(-1)
      console.log(
        `memory ${config.padEnd(5)} ${entries.toLocaleString('en-US')} answers in ${out.runs[config].seconds.toFixed(1)} s: ` +
          `heap + external ${mib(last.heapUsed + last.external)} MiB, rss ${mib(last.rss)} MiB` +
          (last.store === undefined
            ? ''
            : `, store ${last.store.entries} entries, ${mib(last.store.bytes)} MiB`),
      )
    }
  } catch (err) {
    out.error = err.message
    return out
  }
  const growth = (run) => {
    const [first, last] = [run.samples[0], run.samples.at(-1)]
    return {
      heapUsed: last.heapUsed - first.heapUsed,
      external: last.external - first.external,
      held: last.heapUsed + last.external - (first.heapUsed + first.external),
      rss: last.rss - first.rss,
      maxHeld:
        Math.max(...run.samples.map((s) => s.heapUsed + s.external)) - (first.heapUsed + first.external),
    }
  }
  const ghost = growth(out.runs.ghost)
  const off = growth(out.runs.off)
  const storeMax = Math.max(...out.runs.ghost.samples.map((s) => s.store?.bytes ?? 0))
  // The store's share: what the ghost run kept beyond the control, at its highest sample.
  const storeHeld = ghost.maxHeld - Math.max(0, off.maxHeld)
  out.growth = { ghost, off }
  out.storeMaxBytes = storeMax
  out.storeHeldBytes = storeHeld
  out.checks = [
    {
      what: `the store's own count stays within maxBytes (${mib(MEMORY_MAX_BYTES)} MiB)`,
      measured: `${mib(storeMax)} MiB at most`,
      met: storeMax <= MEMORY_MAX_BYTES,
    },
    {
      what: `heap + external held beyond the control stays within maxBytes + ${mib(MEMORY_OVERHEAD_BYTES)} MiB`,
      measured: `${mib(storeHeld)} MiB at most`,
      met: storeHeld <= MEMORY_MAX_BYTES + MEMORY_OVERHEAD_BYTES,
    },
  ]
  out.met = out.checks.every((c) => c.met)
  return out
}

async function memoryRun(config, backend, entries) {
  const proxy = await spawnServer({
    script: SELF,
    args: ['proxy', String(backend.port), config],
    nodeArgs: ['--expose-gc'],
  })
  const pool = new Pool(`http://127.0.0.1:${proxy.port}`, {
    connections: MEMORY_CONCURRENCY,
    headersTimeout: MEMORY_TIMEOUT_MS,
    bodyTimeout: MEMORY_TIMEOUT_MS,
  })
  const sample = async (answers) => {
    const { usage, store } = await proxy.ask('memory', 'memory')
    return { answers, ...usage, ...(store !== undefined && { store }) }
  }
  try {
    const samples = [await sample(0)]
    const started = performance.now()
    let next = 0
    /** One of MEMORY_CONCURRENCY clients: GET the next distinct URL until `end`, each answer checked. */
    const client = async (end) => {
      while (next < end) {
        const n = next++
        const res = await pool.request({ path: `/large?memory=${n}`, method: 'GET' })
        const body = await res.body.arrayBuffer()
        if (res.statusCode !== 200 || body.byteLength !== LARGE_BYTES)
          throw new Error(`GET /large?memory=${n}: ${res.statusCode}, ${body.byteLength} bytes`)
      }
    }
    let busy = 0
    while (next < entries) {
      const end = Math.min(entries, next + MEMORY_STEP)
      const t = performance.now()
      await Promise.all(Array.from({ length: MEMORY_CONCURRENCY }, () => client(end)))
      busy += performance.now() - t
      samples.push(await sample(end))
    }
    return { samples, seconds: busy / 1e3, wallSeconds: (performance.now() - started) / 1e3 }
  } finally {
    await pool.close()
    await proxy.stop()
  }
}

// ─── Part 4: instructions per request (callgrind) ───────────────────────────

/**
 * Instructions per request, where the wrk runs' CPU figures are too noisy to tell 5%
 * apart. Each learning variant's proxy runs under callgrind with its counting off
 * (`--instr-atstart=no`), is warmed up (its functions optimized; with distinct URLs, its
 * store full, so that every answer learned evicts one), then counting is switched on
 * (`callgrind_control -i on`) for the measured requests and read back (`-e Ir`). Requests
 * go over 4 keep-alive connections, one at a time on each. `--single-threaded`: the
 * garbage collector's work runs, and is counted, on the main thread. Not counted: the
 * kernel's share (the socket reads and writes, the same with the ghost on or off), so
 * the ratios are of the process' own work and overstate what the ghost adds to its CPU
 * time; nor memory stalls (a 100 KiB copy counts its instructions, not its cache misses).
 */
async function instructionsPart(backend, bodies, learning) {
  const out = { plan: INSTRUCTION_PLAN, nodeFlags: ['--single-threaded'], rows: [] }
  try {
    for (const body of bodies) {
      // Two at a time: counts do not depend on what else runs.
      for (let i = 0; i < learning.length; i += 2) {
        const pair = learning.slice(i, i + 2)
        const counted = await Promise.all(pair.map((variant) => callgrind(variant, body, backend)))
        pair.forEach((variant, k) => {
          const { warmup, measured } = INSTRUCTION_PLAN[body][VARIANTS[variant].distinct ? 'distinct' : 'one']
          const row = { body, variant, warmup, measured, instructions: counted[k] }
          row.perRequest = row.instructions / measured
          out.rows.push(row)
          console.log(
            `instructions ${body.padEnd(5)} ${variant.padEnd(15)} ${Math.round(row.perRequest).toLocaleString('en-US').padStart(10)} per request`,
          )
        })
      }
    }
  } catch (err) {
    out.error = err.message
  }
  out.ratios = CLAIMS.filter((c) => c.kind === 'cpu').flatMap((c) =>
    bodies.flatMap((body) => {
      const a = out.rows.find((r) => r.body === body && r.variant === c.variant)
      const b = out.rows.find((r) => r.body === body && r.variant === c.base)
      if (a === undefined || b === undefined) return []
      return [
        {
          body,
          variant: c.variant,
          base: c.base,
          added: a.perRequest - b.perRequest,
          ratio: a.perRequest / b.perRequest,
          target: c.target,
        },
      ]
    }),
  )
  return out
}

/** callgrind_control's `-e Ir` answer: the instructions counted so far, over every thread. */
const instructionsOf = (text) =>
  [...text.matchAll(/Th \d+\s+([\d,]+)/g)].reduce((s, m) => s + Number(m[1].replaceAll(',', '')), 0)

/** Instructions the proxy of `variant` executes for INSTRUCTION_PLAN's measured requests, once warm. */
function callgrind(variant, body, backend) {
  const spec = VARIANTS[variant]
  const { warmup, measured } = INSTRUCTION_PLAN[body][spec.distinct ? 'distinct' : 'one']
  return new Promise((resolve, reject) => {
    const child = spawnTracked(
      'valgrind',
      [
        '--tool=callgrind',
        '--instr-atstart=no',
        '--callgrind-out-file=/dev/null',
        process.execPath,
        '--single-threaded',
        SELF,
        'counted',
        String(backend.port),
        spec.config,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const fail = (err) => {
      clearTimeout(deadline)
      child.kill('SIGKILL')
      reject(err)
    }
    const deadline = setTimeout(
      () => fail(new Error(`callgrind ${variant} ${body}: not done in ${CALLGRIND_TIMEOUT_MS / 1e3} s`)),
      CALLGRIND_TIMEOUT_MS,
    )
    let stdout = ''
    let stderr = ''
    let started = false
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr = (stderr + d).slice(-4_000)))
    child.once('error', fail)
    child.once('exit', (code, signal) => {
      if (!started || code !== null)
        fail(new Error(`callgrind ${variant} ${body}: exited (${signal ?? code})\n${stderr}`))
    })
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d
      const m = /port (\d+)/.exec(stdout)
      if (m === null || started) return
      started = true
      const control = (...args) =>
        execFileSync('callgrind_control', [...args, String(child.pid)], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'], // vgdb's "sending command …" lines
        })
      const load = countedLoad(Number(m[1]), body, spec.distinct === true)
      ;(async () => {
        await load(warmup)
        control('-i', 'on')
        const before = instructionsOf(control('-e', 'Ir'))
        await load(measured)
        const counted = instructionsOf(control('-e', 'Ir')) - before
        clearTimeout(deadline)
        child.removeAllListeners('exit')
        child.kill('SIGKILL')
        resolve(counted)
      })().catch(fail)
    })
  })
}

/**
 * GETs of `body` over 4 keep-alive connections, each after the previous answer, every
 * answer checked: `load(n)` sends the next `n` (distinct URLs keep counting up).
 */
function countedLoad(port, body, distinct) {
  const agent = new Agent({ keepAlive: true, maxSockets: 4 })
  let next = 0
  const one = (i) =>
    new Promise((resolve, reject) => {
      const path = distinct ? `/${body}?counted=${i}` : `/${body}`
      get({ host: '127.0.0.1', port, path, agent }, (res) => {
        let bytes = 0
        res.on('data', (c) => (bytes += c.length))
        res.once('end', () => {
          const expected = body === 'large' ? LARGE_BYTES : Buffer.byteLength(SMALL)
          if (res.statusCode === 200 && bytes === expected) resolve()
          else reject(new Error(`GET ${path} under callgrind: ${res.statusCode}, ${bytes} bytes`))
        })
      }).once('error', reject)
    })
  return async (n) => {
    const end = next + n
    const client = async () => {
      while (next < end) await one(next++)
    }
    await Promise.all([client(), client(), client(), client()])
  }
}

// ─── Report ─────────────────────────────────────────────────────────────────

const medianOf = (xs) => median(xs.filter(Number.isFinite)) ?? Number.NaN
const fmt = (x, d = 0) =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—'
const mib = (bytes) => fmt(bytes / 1024 / 1024, 1)
const range = (xs, d) => (xs.length === 0 ? '—' : `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`)

/** Per body and variant: medians and ranges of req/s and proxy CPU per request, over the successful runs. */
function summarize(runs, selected, bodies) {
  const out = {}
  for (const body of bodies) {
    out[body] = {}
    for (const variant of selected) {
      const mine = runs.filter((r) => r.ok && r.body === body && r.variant === variant)
      const rates = mine.map((r) => r.reqPerSec)
      const cpus = mine.map((r) => r.cpuUsPerRequest)
      out[body][variant] = {
        runs: mine.length,
        reqPerSec: medianOf(rates),
        reqPerSecRange: range(rates, 0),
        cpuUsPerRequest: medianOf(cpus),
        cpuRange: range(cpus, 1),
        p99Ms: medianOf(mine.map((r) => r.latencyMs.p99)),
      }
    }
  }
  return out
}

/** The claims whose two variants ran: per round the ratio, then its median and range. */
function compareRuns(runs, selected, bodies) {
  const out = []
  for (const body of bodies) {
    for (const c of CLAIMS) {
      if (!selected.includes(c.variant) || !selected.includes(c.base)) continue
      const perRound = []
      for (const a of runs.filter((r) => r.ok && r.body === body && r.variant === c.variant)) {
        const b = runs.find((r) => r.ok && r.body === body && r.variant === c.base && r.round === a.round)
        if (b === undefined) continue
        const ratio =
          c.kind === 'cpu'
            ? a.cpuUsPerRequest / b.cpuUsPerRequest
            : c.kind === 'capacity'
              ? b.cpuUsPerRequest / a.cpuUsPerRequest
              : a.reqPerSec / b.reqPerSec
        perRound.push({ round: a.round, ratio })
      }
      const ratios = perRound.map((p) => p.ratio)
      const ratio = medianOf(ratios)
      const met =
        c.target === undefined ? undefined : c.kind === 'cpu' ? ratio <= c.target : ratio >= c.target
      out.push({ ...c, body, ratio, perRound, met })
    }
  }
  return out
}

const BODY_LABEL = { small: '17 B', large: '100 KiB' }

function markdownSummary(summary, rounds) {
  const lines = []
  for (const [body, rows] of Object.entries(summary)) {
    lines.push(
      `## ${BODY_LABEL[body]} answers (medians over ${rounds} rounds)`,
      '',
      '| Variant | runs | req/s | req/s range | proxy CPU µs/req | CPU range | p99 ms |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    )
    for (const [variant, s] of Object.entries(rows))
      lines.push(
        `| ${variant}: ${VARIANTS[variant].label} | ${s.runs} | ${fmt(s.reqPerSec)} | ${s.reqPerSecRange} | ${fmt(s.cpuUsPerRequest, 1)} | ${s.cpuRange} | ${fmt(s.p99Ms, 2)} |`,
      )
    lines.push('')
  }
  return lines.join('\n').trimEnd()
}

function markdownClaims(claims) {
  const lines = [
    '## Ratios (paired by round; median, range and each round)',
    '',
    '| Body | Comparison | Target | Median | Range | Per round | Met |',
    '| --- | --- | ---: | ---: | ---: | --- | :---: |',
  ]
  for (const c of claims) {
    const what = c.kind === 'cpu' ? 'CPU µs/req' : c.kind === 'capacity' ? 'capacity, CPU µs/req' : 'req/s'
    const target = c.target === undefined ? '—' : `${c.kind === 'cpu' ? '≤' : '≥'} ${fmt(c.target, 2)}x`
    const ratios = c.perRound.map((p) => p.ratio)
    lines.push(
      `| ${BODY_LABEL[c.body]} | ${what}: ${c.kind === 'capacity' ? `${c.base} ÷ ${c.variant}` : `${c.variant} ÷ ${c.base}`} | ${target} | ${fmt(c.ratio, 2)}x | ${range(ratios, 2)} | ${ratios.map((r) => fmt(r, 2)).join(', ')} | ${c.met === undefined ? '—' : c.met ? 'yes' : '**no**'} |`,
    )
  }
  return lines.join('\n')
}

function markdownInstructions(ins) {
  const lines = [
    '## Instructions per request (callgrind, --single-threaded, counted once warm)',
    '',
    '| Body | Variant | warm-up requests | counted requests | instructions / request |',
    '| --- | --- | ---: | ---: | ---: |',
    ...ins.rows.map(
      (r) =>
        `| ${BODY_LABEL[r.body]} | ${r.variant} | ${fmt(r.warmup)} | ${fmt(r.measured)} | ${fmt(r.perRequest)} |`,
    ),
  ]
  if (ins.ratios.length > 0)
    lines.push(
      '',
      '| Body | Comparison | Added / request | Ratio | Target |',
      '| --- | --- | ---: | ---: | ---: |',
      ...ins.ratios.map(
        (r) =>
          `| ${BODY_LABEL[r.body]} | ${r.variant} ÷ ${r.base} | +${fmt(r.added)} | ${fmt(r.ratio, 3)}x | ≤ ${fmt(r.target, 2)}x |`,
      ),
    )
  if (ins.error !== undefined) lines.push('', `FAILED: ${ins.error}`)
  return lines.join('\n')
}

function markdownMemory(memory) {
  if (memory.error !== undefined) return `## Memory store\n\nFAILED: ${memory.error}`
  const lines = [
    `## Memory store: ${memory.entries.toLocaleString('en-US')} distinct 100 KiB answers (after two full GCs)`,
    '',
    '| Answers | ghost: store entries | store MiB | heapUsed MiB | external MiB | rss MiB | peak rss MiB | off: heapUsed MiB | external MiB | rss MiB | peak rss MiB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  const { ghost, off } = memory.runs
  ghost.samples.forEach((g, i) => {
    const o = off.samples[i] ?? {}
    lines.push(
      `| ${g.answers.toLocaleString('en-US')} | ${g.store?.entries ?? '—'} | ${mib(g.store?.bytes)} | ${mib(g.heapUsed)} | ${mib(g.external)} | ${mib(g.rss)} | ${mib(g.maxRss)} | ${mib(o.heapUsed)} | ${mib(o.external)} | ${mib(o.rss)} | ${mib(o.maxRss)} |`,
    )
  })
  const { ghost: gg, off: og } = memory.growth
  lines.push(
    '',
    `Growth, first sample to last: ghost on heap ${mib(gg.heapUsed)} MiB + external ${mib(gg.external)} MiB (rss ${mib(gg.rss)} MiB); ` +
      `ghost off heap ${mib(og.heapUsed)} MiB + external ${mib(og.external)} MiB (rss ${mib(og.rss)} MiB). ` +
      `${ghost.seconds.toFixed(1)} s and ${off.seconds.toFixed(1)} s of requests.`,
    '',
    '| Check | Measured | Met |',
    '| --- | ---: | :---: |',
    ...memory.checks.map((c) => `| ${c.what} | ${c.measured} | ${c.met ? 'yes' : '**no**'} |`),
  )
  return lines.join('\n')
}

/** Per variant and body, the median profile of its runs: self time by function, and by where it lives. */
function profileSummaries(dir, runs) {
  const out = {}
  for (const r of runs) {
    if (!r.ok) continue
    const key = `${r.variant} ${r.body}`
    const file = join(dir, `${r.variant}-${r.body}-r${r.round}.cpuprofile`)
    try {
      ;(out[key] ??= []).push({ round: r.round, ...summarizeProfile(file) })
    } catch (err) {
      ;(out[key] ??= []).push({ round: r.round, error: err.message })
    }
  }
  return out
}

function markdownProfiles(profiles) {
  const lines = [
    '## CPU profiles (the whole life of each proxy: start, checks, warm-up and measured window)',
    '',
    'Time under the ghost: in frames of `core/src/ghost/` and everything they call (Buffer copies, lru-cache), by',
    'the outermost ghost frame; not the garbage collection its allocations bring.',
  ]
  for (const [key, list] of Object.entries(profiles)) {
    const ok = list.filter((x) => x.error === undefined)
    if (ok.length === 0) continue
    const p = ok[0]
    const shares = ok.map((x) => x.under.share * 100)
    // The ghost's entry frames over every round's profile.
    const entries = new Map()
    let ms = 0
    for (const x of ok) {
      ms += x.totalMs
      for (const e of x.under.entries)
        entries.set(`${e.name} ${e.where}`, (entries.get(`${e.name} ${e.where}`) ?? 0) + e.ms)
    }
    lines.push(
      '',
      `### ${key}`,
      '',
      `Under the ghost: ${fmt(medianOf(shares), 1)}% of the busy time (median of ${ok.length}; ${shares.map((x) => fmt(x, 1)).join(', ')}).` +
        ` By place (round ${p.round}): ${p.groups.map((g) => `${g.group} ${fmt(g.share * 100, 1)}%`).join(', ')}.`,
    )
    if (entries.size > 0)
      lines.push(
        '',
        '| Ghost frame (outermost) | Where | Share of busy time, all rounds |',
        '| --- | --- | ---: |',
        ...[...entries]
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => {
            const [name, where] = k.split(' ')
            return `| ${name} | ${where} | ${fmt((100 * v) / ms, 2)}% |`
          }),
      )
    lines.push(
      '',
      `| Function (self time, round ${p.round}) | Where | Self ms | Share |`,
      '| --- | --- | ---: | ---: |',
      ...p.top
        .slice(0, 15)
        .map(
          (f) => `| ${f.name} | ${f.where || '(native)'} | ${fmt(f.selfMs, 1)} | ${fmt(f.share * 100, 1)}% |`,
        ),
    )
  }
  return lines.join('\n')
}

/** The proxy for an instruction count, under callgrind without an IPC channel: it prints its port. */
async function countedRole(backendPort, config) {
  const { server } = await startProxy(backendPort, config)
  process.stdout.write(`port ${server.address().port}\n`)
}

// `node ghost.mjs backend|proxy <backendPort> <config>` with an IPC channel: a child of the runner;
// `node ghost.mjs counted <backendPort> <config>`: under callgrind (part `instructions`), killed when counted.
const role = process.argv[2]
if (role === 'counted') {
  await countedRole(Number(process.argv[3]), process.argv[4])
} else if (process.send !== undefined && (role === 'backend' || role === 'proxy')) {
  const port =
    role === 'backend' ? await backendRole() : await proxyRole(Number(process.argv[3]), process.argv[4])
  process.on('disconnect', () => process.exit(0)) // the runner is gone
  // A normal exit on the runner's SIGTERM: --cpu-prof writes its profile only then.
  process.on('SIGTERM', () => process.exit(0))
  process.send({ type: 'ready', port })
} else {
  await main()
}
