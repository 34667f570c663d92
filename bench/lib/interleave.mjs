/**
 * What one configuration adds to another, in one server process: the method of
 * `bench/interleaved.mjs` and of run.mjs' comparisons "in one process".
 *
 * run.mjs measures each variant in a process of its own, one after the other; on a shared
 * 2-vCPU VM the CPU a request costs moves by tens of microseconds between two such runs (a
 * neighbour's load, the process' own layout and JIT), far more than the ~1 µs an engine is
 * allowed. Here one server serves both apps of the pair — the two variants' handlers, built
 * from their own options (variants.mjs) — and switches between them every `phaseMs` while
 * wrk loads it without pause, in the order A B B A A B B A … (a drift over time falls on
 * both alike). Each phase's CPU time (process.cpuUsage) over the requests that arrived in it
 * is that variant's cost there; the difference of the two phases of each pair is one sample
 * of what the variant adds, and the result gives their median and mean with a 95% bootstrap
 * interval. Both apps live in the process through the whole run, so the second's memory is
 * there in both phases: what a larger heap costs the collector is not in the difference
 * (instructions.mjs counts that; see docs/performance.md).
 *
 * With `gateway`, the pair is two of the Aegis gateways (gateway-proxies.mjs'
 * `gatewayHandlers`) forwarding GET /small (or the 100 KiB /large) to one backend, which runs
 * in a process of its own.
 */
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { gatewayHandlers } from '../gateway-proxies.mjs'
import { listen, variants } from '../variants.mjs'
import { pinProcessTree, spawnTracked, startServer } from './children.mjs'
import { generators, getWhole, problemsOf } from './load.mjs'
import { median, signedUs } from './report.mjs'

/** The script whose `--serve` runs the server side (`serve` below) in a process of its own. */
const SCRIPT = fileURLToPath(new URL('../interleaved.mjs', import.meta.url))
const PROXIES = fileURLToPath(new URL('../gateway-proxies.mjs', import.meta.url))

/** A B B A: each pair of phases holds one of each, and a linear drift cancels over four. */
const ORDER = [0, 1, 1, 0]

/** The two variants named (`base,variant`), each with a `handler()` that builds its app. */
export function pairOf(list, gateway = false, backendPort = undefined) {
  const names = (list ?? '').split(',').map((s) => s.trim())
  if (gateway) {
    const known = Object.keys(gatewayHandlers)
    if (names.length !== 2 || names.some((n) => !known.includes(n)))
      throw new Error(`--gateway --pair takes two of ${known.join(', ')}; got '${list}'`)
    return names.map((name) => ({
      name,
      handler: () => gatewayHandlers[name](`http://127.0.0.1:${backendPort}`),
    }))
  }
  const pair = names.map((n) => variants.find((v) => v.name === n))
  if (names.length !== 2 || pair.some((v) => v?.handler === undefined))
    throw new Error(
      `--pair takes two Aegis variants (base,variant) of variants.mjs; got '${list}'. Known: ${variants
        .filter((v) => v.handler !== undefined)
        .map((v) => v.name)
        .join(', ')}`,
    )
  return pair
}

/** The server side, in the child: both handlers behind one listener, switched every phase. */
export async function serve({ pair: list, phaseMs, gateway, backendPort }) {
  const pair = pairOf(list, gateway, backendPort)
  const handlers = []
  for (const v of pair) handlers.push(await v.handler())
  let step = 0
  let current = ORDER[0]
  let arrived = 0
  const server = createServer((req, res) => {
    arrived++
    handlers[current](req, res)
  })
  server.keepAliveTimeout = 60_000
  await listen(server)
  let phases = []
  let last = process.cpuUsage()
  setInterval(() => {
    const now = process.cpuUsage()
    phases.push({
      step,
      variant: current,
      cpuUs: now.user - last.user + now.system - last.system,
      requests: arrived,
    })
    last = now
    arrived = 0
    current = ORDER[++step % ORDER.length]
  }, phaseMs)
  process.on('message', (message) => {
    // `mark`: the measured window starts at the next phase (the records so far were the warm-up).
    if (message === 'mark') phases = []
    else if (message === 'phases') process.send({ type: 'phases', phases })
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', port: server.address().port })
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length

/** 95% interval of the mean, by resampling the samples (a seeded generator: the same report twice). */
function bootstrap(xs, rounds = 10_000) {
  let seed = 0x9e3779b9
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const means = []
  for (let r = 0; r < rounds; r++) {
    let sum = 0
    for (let i = 0; i < xs.length; i++) sum += xs[Math.floor(random() * xs.length)]
    means.push(sum / xs.length)
  }
  means.sort((a, b) => a - b)
  return [means[Math.floor(rounds * 0.025)], means[Math.floor(rounds * 0.975)]]
}

/**
 * Measure what `pair[1]` adds to `pair[0]` (names, as `--pair` takes them), the pair served
 * in one child process under `seconds` of wrk load after `warmup` unmeasured ones.
 *
 * @example
 * const r = await interleave({ pair: 'koa-aegis-noanomaly,koa-aegis', seconds: 60, pin: true })
 * r.added.median // µs of CPU a request
 */
export async function interleave({
  pair: list,
  seconds = 60,
  phaseMs = 50,
  warmup = 5,
  connections = 50,
  pin = false,
  gateway = false,
  body = 'small',
}) {
  if (!['small', 'large'].includes(body)) throw new Error(`--body is small or large, not ${body}`)
  pairOf(list, gateway) // a wrong pair fails here, not in the child
  const cpus = pin ? '0' : undefined
  const backend = gateway ? await startServer(PROXIES, 'backend') : undefined
  const child = spawnTracked(
    process.execPath,
    [
      SCRIPT,
      '--serve',
      list,
      '--phase-ms',
      String(phaseMs),
      ...(backend === undefined ? [] : ['--gateway', '--backend', String(backend.port)]),
    ],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  )
  const next = (type) =>
    new Promise((resolve, reject) => {
      const onMessage = (m) => {
        if (m?.type !== type) return
        child.off('message', onMessage)
        resolve(m)
      }
      child.on('message', onMessage)
      child.once('exit', (code) => reject(new Error(`the server exited (${code})`)))
    })
  try {
    const { port } = await next('ready')
    if (pin) pinProcessTree(child.pid, '1')
    const url = `http://127.0.0.1:${port}/${backend === undefined ? '' : body}`
    const answer = await getWhole(url)
    if (answer.status !== 200) throw new Error(`GET / answered ${answer.status}`)
    if (warmup > 0) await generators.wrk.run({ url, duration: warmup, connections, cpus })
    child.send('mark')
    const load = await generators.wrk.run({ url, duration: seconds, connections, cpus })
    const problems = problemsOf(load)
    if (problems.length > 0) throw new Error(`the load failed: ${problems.join(', ')}`)
    const waiting = next('phases')
    child.send('phases')
    // The first phase began before the mark and the last ran past wrk's end: both left out.
    const phases = (await waiting).phases.slice(1, -1).filter((p) => p.requests > 0)
    // Pairs of phases: steps 2k and 2k + 1 (one of each variant, by ORDER).
    const byStep = new Map(phases.map((p) => [p.step, p]))
    const samples = []
    for (const x of phases) {
      const y = byStep.get(x.step + 1)
      if (x.step % 2 !== 0 || y === undefined) continue
      const [a, b] = x.variant === 0 ? [x, y] : [y, x]
      samples.push({ a: a.cpuUs / a.requests, b: b.cpuUs / b.requests, rate: b.requests / a.requests })
    }
    const totals = [0, 1].map((v) => {
      const mine = phases.filter((p) => p.variant === v)
      const cpu = mine.reduce((s, p) => s + p.cpuUs, 0)
      const requests = mine.reduce((s, p) => s + p.requests, 0)
      // Each phase lasts phaseMs: its requests over that time are the variant's rate there.
      const reqPerSec = requests / ((mine.length * phaseMs) / 1000)
      return { cpuUsPerRequest: cpu / requests, requests, phases: mine.length, reqPerSec }
    })
    const diffs = samples.map((s) => s.b - s.a)
    return {
      date: new Date().toISOString(),
      node: process.version,
      pair: list.split(',').map((s) => s.trim()),
      seconds,
      warmup,
      phaseMs,
      connections,
      pinned: pin,
      reqPerSec: load.reqPerSec,
      totals,
      pairs: samples.length,
      added: { median: median(diffs), mean: mean(diffs), ci95: bootstrap(diffs) },
      // B's requests over A's in the two phases of each pair (equal lengths): B's req/s relative to A's.
      rateRatio: { median: median(samples.map((x) => x.rate)), ci95: bootstrap(samples.map((x) => x.rate)) },
      samples,
    }
  } finally {
    child.kill('SIGKILL')
    await backend?.stop()
  }
}

/** The report of one result, in Markdown lines. */
export function interleavedLines(result) {
  const [a, b] = result.pair
  const { median: mid, mean: avg, ci95 } = result.added
  return [
    '| Variant | requests | phases | req/s in its phases | CPU µs/request |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...result.totals.map(
      (t, i) =>
        `| ${result.pair[i]} | ${t.requests} | ${t.phases} | ${Math.round(t.reqPerSec)} | ${t.cpuUsPerRequest.toFixed(3)} |`,
    ),
    '',
    `${b} − ${a}, over ${result.pairs} pairs of phases: median ${signedUs(mid)}, mean ${signedUs(avg)} ` +
      `(95% interval ${signedUs(ci95[0])} to ${signedUs(ci95[1])}); over the totals ` +
      `${signedUs(result.totals[1].cpuUsPerRequest - result.totals[0].cpuUsPerRequest)}.`,
    `${b} / ${a} req/s, per pair: median ${result.rateRatio.median.toFixed(3)}x ` +
      `(95% interval of the mean ${result.rateRatio.ci95.map((x) => x.toFixed(3)).join('x to ')}x).`,
  ]
}
