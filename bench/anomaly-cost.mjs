#!/usr/bin/env node
/**
 * The anomaly engine's cost per request, in process: a client's feature update and its
 * rules (every request), and that plus computing its features and scoring them with a
 * 100-tree forest (what a request costs when it is the one scored: at most one a second
 * or every 16th of a client). The engine's own modules (features.ts, rules.ts,
 * forest.ts) are transpiled with the repository's `typescript` into packages/core (so
 * `lru-cache` resolves as core's dependency) and imported; nothing is reimplemented here.
 *
 *   node bench/anomaly-cost.mjs [--requests N] [--clients N] [--seed N] [--json FILE]
 *
 * Traffic: `--clients` clients (10,000) on 40 routes, browsers and tools, statuses mostly
 * 200 with some 404 and 401; each request timed alone with process.hrtime.bigint().
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import ts from 'typescript'
import { importAegis } from './lib/aegis.mjs'
import { scriptArgs } from './lib/args.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    requests: { type: 'string', default: '300000' },
    clients: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
    json: { type: 'string' },
  },
})
const REQUESTS = Number(values.requests)
const CLIENTS = Number(values.clients)

/** Transpile the engine's modules beside core's node_modules and import them. */
async function load() {
  const out = join(root, 'packages/core/.bench-anomaly')
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  // The modules and what they import of core, in their folders (the relative imports hold).
  for (const name of [
    'anomaly/forest',
    'anomaly/features',
    'anomaly/rules',
    'anomaly/trainer',
    'kernel/hash',
  ]) {
    const source = readFileSync(join(root, `packages/core/src/${name}.ts`), 'utf8')
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
        isolatedModules: true,
      },
    })
    mkdirSync(join(out, name, '..'), { recursive: true })
    writeFileSync(join(out, `${name}.js`), outputText)
  }
  try {
    const forest = await import(pathToFileURL(join(out, 'anomaly/forest.js')).href)
    const features = await import(pathToFileURL(join(out, 'anomaly/features.js')).href)
    const rules = await import(pathToFileURL(join(out, 'anomaly/rules.js')).href)
    const trainer = await import(pathToFileURL(join(out, 'anomaly/trainer.js')).href)
    return { ...forest, ...features, ...rules, ...trainer }
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}

const m = await load()
const random = m.seeded(Number(values.seed))
const browsers = Array.from({ length: 50 }, (_, i) => `Mozilla/5.0 (X11; Linux x86_64) Firefox/${100 + i}.0`)
const routes = Array.from({ length: 40 }, (_, i) => (i % 4 === 0 ? `/items/:id${i}` : `/page${i}`))
const clients = Array.from({ length: CLIENTS }, (_, i) => {
  const tool = random() < 0.1
  return {
    key: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    headers: tool
      ? { 'user-agent': 'python-requests/2.31', accept: '*/*' }
      : { 'user-agent': browsers[i % browsers.length], 'accept-language': 'en-GB,en;q=0.9' },
  }
})
// The request stream, made before timing: client, path, route, status.
const stream = Array.from({ length: REQUESTS }, () => {
  const c = Math.floor(random() ** 2 * CLIENTS)
  const r = Math.floor(random() * routes.length)
  const asset = random() < 0.4
  const path = asset
    ? `/static/app-${r}.css`
    : `${routes[r].replace(/:id\d+/, '')}${Math.floor(random() * 500)}`
  const roll = random()
  return {
    c,
    path,
    route: asset ? '/static/*' : routes[r],
    status: roll < 0.03 ? 404 : roll < 0.04 ? 401 : 200,
  }
})
// What the table reads of a request: its method and raw headers.
const reqs = clients.map((c) => ({ method: 'GET', rawHeaders: Object.entries(c.headers).flat() }))

const settings = m.ruleSettings({
  flood: { requests: 30, seconds: 5 },
  scanner: { notFound: 8, ratio: 0.5 },
  bruteForce: { failures: 5 },
  enumeration: { ids: 30, ratio: 0.3 },
  scraper: { pages: 60 },
})

/** Replay the stream on a fresh table; `score` also computes features and scores each request. */
function replay(forest) {
  const table = new m.ClientTable(100_000, 5)
  const out = new Float64Array(m.DIMENSIONS)
  const seen = { now: 0, path: '/', route: '/', status: 200, ...reqs[0] }
  const times = new Float64Array(REQUESTS)
  let now = 1_700_000_000_000
  let sink = 0
  for (let i = 0; i < REQUESTS; i++) {
    const s = stream[i]
    now += 2
    const t0 = process.hrtime.bigint()
    const slot = table.touch(clients[s.c].key)
    seen.now = now
    seen.path = s.path
    seen.route = s.route
    seen.status = s.status
    seen.method = reqs[s.c].method
    seen.rawHeaders = reqs[s.c].rawHeaders
    table.update(slot, seen)
    sink += m.checkRules(table, slot, settings)
    if (forest !== undefined) sink += forest.score(table.features(slot, now, out))
    times[i] = Number(process.hrtime.bigint() - t0)
  }
  return { times, sink, table }
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
const summary = (times) => {
  // The first pass of a table warms V8 and grows it: the second half is the steady state.
  const sorted = Float64Array.from(times.subarray(times.length >> 1)).sort()
  return { p50: quantile(sorted, 0.5) / 1000, p99: quantile(sorted, 0.99) / 1000 }
}

// Grow the forest on snapshots of the clients as a first replay leaves them.
const first = replay(undefined)
const snapshots = new Float64Array(4096 * m.DIMENSIONS)
let rows = 0
for (const [, slot] of first.table.entries()) {
  if (rows >= 4096) break
  snapshots.set(
    first.table.features(slot, 1_700_000_000_000 + 2 * REQUESTS, new Float64Array(m.DIMENSIONS)),
    rows * m.DIMENSIONS,
  )
  rows++
}
const forest = m.growForest(snapshots.subarray(0, rows * m.DIMENSIONS), m.DIMENSIONS, {
  trees: 100,
  subsample: 256,
  seed: 1,
})
const update = summary(replay(undefined).times)
const scored = summary(replay(forest).times)
const perClient = m.F.FIELDS * 8 // one row of Float64 numbers; the LRU's entry and the key string come on top

/** Grow models as the engine does (chunks between turns of the event loop): wall time and the longest stall. */
async function training(runs) {
  const stalls = []
  const times = []
  for (let run = 0; run < runs; run++) {
    const histogram = monitorEventLoopDelay({ resolution: 1 })
    histogram.enable()
    const done = new Promise((resolve, reject) => {
      const trainer = m.createTrainer({
        dimensions: m.DIMENSIONS,
        capacity: 4096,
        trees: 100,
        subsample: 256,
        seed: run + 1,
        onModel: resolve,
        onError: reject,
      })
      for (let i = 0; i < rows; i++)
        trainer.offer(snapshots.subarray(i * m.DIMENSIONS, (i + 1) * m.DIMENSIONS))
      trainer.train(0)
    })
    const model = await done
    // Let the monitor see the last turn.
    await new Promise((resolve) => setTimeout(resolve, 5))
    histogram.disable()
    times.push(model.ms)
    stalls.push(histogram.max / 1e6)
  }
  const sort = (a) => [...a].sort((x, y) => x - y)
  return {
    msMedian: quantile(sort(times), 0.5),
    msMax: Math.max(...times),
    stallMedian: quantile(sort(stalls), 0.5),
    stallMax: Math.max(...stalls),
    runs,
  }
}
const trained = await training(20)

/** Heap and array bytes that 100,000 clients take in a table of 100,000 (what `maxClients` bounds). */
function memory() {
  const gc = globalThis.gc
  if (gc === undefined) return undefined
  gc()
  const before = process.memoryUsage()
  const table = new m.ClientTable(100_000, 5)
  const seen = { now: 1, path: '/a', route: '/a', status: 200, ...reqs[0] }
  for (let i = 0; i < 100_000; i++)
    table.update(table.touch(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`), seen)
  gc()
  const after = process.memoryUsage()
  const bytes = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers
  return { clients: table.size, bytes, perClient: Math.round(bytes / table.size) }
}
const held = memory()

/**
 * The engine in the real pipeline (the built @aegis/core): `admit` then `observe` of one
 * request, as an adapter calls them, with today's defaults (limit never reached) and with
 * the same minus the anomaly engine, alternated over `rounds`; the engine's cost is the
 * difference of the medians. Requests come from 1,000 clients over 40 paths with a
 * browser's header fields, 50 to an event-loop turn.
 */
async function pipeline(rounds, perRound) {
  const { createAegis } = await importAegis('core')
  const base = { limiter: { points: 1e9, duration: 60 }, metrics: false }
  const fake = Array.from({ length: 4096 }, (_, i) => {
    const c = i % 1000
    const rawHeaders = [
      'Host',
      'example.com',
      'User-Agent',
      browsers[c % browsers.length],
      'Accept',
      'text/html',
      'Accept-Language',
      'en-GB',
    ]
    const headers = {
      host: 'example.com',
      'user-agent': browsers[c % browsers.length],
      accept: 'text/html',
      'accept-language': 'en-GB',
    }
    return {
      method: 'GET',
      url: i % 3 === 0 ? `/static/app-${i % 40}.css` : `/page/${i % 40}`,
      httpVersion: '1.1',
      httpVersionMajor: 1,
      rawHeaders,
      headers,
      socket: { remoteAddress: `10.1.${c >> 8}.${c & 255}` },
    }
  })
  const res = {
    statusCode: 200,
    writableFinished: true,
    setHeader() {},
    getHeader() {},
    removeHeader() {},
    on() {},
  }
  // The engine takes a turn's finished requests in one batch, on setImmediate: each turn here
  // ends with one (both instances alike), so the batch's work is inside the time.
  const TURN = 50
  const turn = () => new Promise((resolve) => setImmediate(resolve))
  const time = async (aegis) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < perRound; i++) {
      const req = { ...fake[i & 4095] }
      aegis.admit(req)
      aegis.observe(req, res)
      if (i % TURN === TURN - 1) await turn()
    }
    await turn()
    return Number(process.hrtime.bigint() - t0) / perRound
  }
  const on = createAegis(base)
  const off = createAegis({ ...base, anomaly: false })
  await time(on)
  await time(off)
  const ons = []
  const offs = []
  for (let r = 0; r < rounds; r++) {
    offs.push(await time(off))
    ons.push(await time(on))
  }
  await Promise.all([on.close(), off.close()])
  const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1] / 1000
  return { on: median(ons), off: median(offs), added: median(ons) - median(offs) }
}
const inPipeline = await pipeline(15, 200_000)

const result = {
  node: process.version,
  requests: REQUESTS,
  clients: CLIENTS,
  update,
  scored,
  rowBytesPerClient: perClient,
  training: trained,
  pipeline: inPipeline,
  memory: held,
  targets: { p50: 10, p99: 25 },
}
console.log(
  `anomaly cost per request (${REQUESTS} requests over ${CLIENTS} clients, ${process.version}; the steady second half)\n`,
)
console.log('| what | p50 µs | p99 µs |')
console.log('| --- | ---: | ---: |')
console.log(
  `| feature update + rules (every request) | ${update.p50.toFixed(2)} | ${update.p99.toFixed(2)} |`,
)
console.log(
  `| update + rules + features + 100-tree score (a scored request) | ${scored.p50.toFixed(2)} | ${scored.p99.toFixed(2)} |`,
)
console.log(`\nrow: ${perClient} bytes per client (${m.F.FIELDS} numbers), plus its LRU entry and key`)
console.log(
  `in the pipeline (admit + observe, defaults, 50 requests a turn): ${inPipeline.off.toFixed(2)} µs without the engine, ${inPipeline.on.toFixed(2)} µs with it: +${inPipeline.added.toFixed(2)} µs a request`,
)
console.log(
  `training 100 trees × 256 in chunks, ${trained.runs} runs: ${trained.msMedian.toFixed(1)} ms median, ${trained.msMax.toFixed(1)} ms max (wall, waits between chunks included); longest event-loop stall ${trained.stallMedian.toFixed(1)} ms median, ${trained.stallMax.toFixed(1)} ms max`,
)
console.log(
  held === undefined
    ? 'memory: run with --expose-gc to measure'
    : `memory: ${held.clients} clients hold ${(held.bytes / 1e6).toFixed(1)} MB, ${held.perClient} bytes each (rows, LRU entries, keys)`,
)
const met =
  scored.p50 <= 10 &&
  scored.p99 <= 25 &&
  trained.msMax <= 50 &&
  trained.stallMax <= 20 &&
  (held === undefined || held.perClient <= 1024)
console.log(
  `targets (update + score ≤ 10 µs p50, ≤ 25 µs p99; training ≤ 50 ms, no stall over 20 ms; ≤ 1 KB a client): ${met ? 'met' : 'NOT met'}`,
)
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`)
