/**
 * Aegis benchmark runner (`pnpm bench`): hello-world apps, bare, with Aegis
 * defaults and with the peer stacks, each run in a fresh server process under
 * wrk (or autocannon), in interleaved rounds. Method: bench/README.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import {
  buildLines,
  compareBuilds,
  describeBuilds,
  importProblems,
  markdownBuilds,
  pairOrder,
  prepareBaseline,
  serverEnv,
} from './lib/ab.mjs'
import { scriptArgs } from './lib/args.mjs'
import { buildPackages, checkBuilt, distFingerprint, environmentInfo, sourceState } from './lib/build.mjs'
import { pinProcessTree, spawnServer } from './lib/children.mjs'
import { interleave } from './lib/interleave.mjs'
import { generators, problemsOf } from './lib/load.mjs'
import {
  checkClaims,
  compare,
  markdownClaims,
  markdownComparisons,
  markdownInProcess,
  markdownTable,
  markdownTargets,
  signedUs,
  summarize,
  targetChecks,
} from './lib/report.mjs'
import { claims, comparisons, HELLO, selectVariants, suites, variants } from './variants.mjs'

const SERVER = fileURLToPath(new URL('server.mjs', import.meta.url))
const RESULTS = fileURLToPath(new URL('results/', import.meta.url))

const USAGE = `Usage: pnpm bench [options]

  --rounds N         interleaved rounds, each running every variant once (default 5)
  --duration S       measured seconds per run (default 5)
  --connections C    concurrent keep-alive connections (default 50)
  --warmup S         unmeasured seconds of the same load before each run (default 2)
  --suite NAME       a named set of variants: ${Object.entries(suites)
    .map(([name, list]) => `${name} (${list.length} variants)`)
    .join(', ')} (default headline)
  --only a,b         only these variants (overrides --suite): ${variants.map((v) => v.name).join(', ')}
  --autocannon       load with autocannon instead of wrk (cross-check)
  --in-process S     after the rounds, each CPU comparison of two selected Aegis variants
                     again in one process, S seconds (interleaved.mjs' method; default 60,
                     0: none; wrk only): where a ~1 µs target is judged
  --pin              the server on CPU 1, wrk on CPU 0 (taskset; wrk only, needs 2+ CPUs)
  --skip-build       use the packages' existing dist/ instead of building first
  --baseline B       also measure another build, interleaved: B is a directory made by
                     bench/snapshot.mjs (or a checkout with built packages/), or a commit
                     (snapshotted into a temporary directory); every variant then runs on
                     both builds in each round, and the report compares them
  -h, --help         this text`

function parseOptions(argv) {
  const { values } = parseArgs({
    args: scriptArgs(argv),
    options: {
      rounds: { type: 'string', default: '5' },
      duration: { type: 'string', default: '5' },
      connections: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '2' },
      'in-process': { type: 'string', default: '60' },
      suite: { type: 'string', default: 'headline' },
      only: { type: 'string' },
      autocannon: { type: 'boolean', default: false },
      pin: { type: 'boolean', default: false },
      'skip-build': { type: 'boolean', default: false },
      baseline: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  const integer = (name, min) => {
    const n = Number(values[name])
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}`)
    return n
  }
  if (values.pin && values.autocannon) throw new Error('--pin works with wrk only, not --autocannon')
  const suite = suites[values.suite]
  if (suite === undefined)
    throw new Error(`unknown --suite ${values.suite}: ${Object.keys(suites).join(', ')}`)
  // In the order listed: the order of each round and of the report.
  const selected = selectVariants(values.only, suite)
  return {
    help: values.help,
    rounds: integer('rounds', 1),
    duration: integer('duration', 1),
    connections: integer('connections', 1),
    warmup: integer('warmup', 0),
    // In one process the load is wrk's, always.
    inProcess: values.autocannon ? [] : inProcessComparisons(selected, integer('in-process', 0)),
    inProcessSeconds: integer('in-process', 0),
    variants: selected,
    generator: values.autocannon ? generators.autocannon : generators.wrk,
    pin: values.pin,
    build: !values['skip-build'],
    baseline: values.baseline,
  }
}

/**
 * The CPU comparisons of two selected Aegis variants (both have a handler to serve in one
 * process). Not the Redis ones: a handler does not wait for its store (run.mjs' probe proves
 * Redis decided each request), and Redis' CPU is another process' anyway.
 */
function inProcessComparisons(selected, seconds) {
  if (seconds === 0) return []
  const served = new Set(
    selected.filter((v) => v.handler !== undefined && v.probe === undefined).map((v) => v.name),
  )
  return comparisons.filter((c) => c.kind === 'cpu' && served.has(c.variant) && served.has(c.base))
}

/**
 * What each comparison's variant adds to its base, both served by one process in
 * alternation (lib/interleave.mjs): the figure a target of about a microsecond needs.
 */
async function measureInProcess(options) {
  const { inProcess, inProcessSeconds: seconds, connections, pin } = options
  const out = []
  for (const c of inProcess) {
    const row = { ...c }
    try {
      row.result = await interleave({ pair: `${c.base},${c.variant}`, seconds, connections, pin })
      const { median, ci95 } = row.result.added
      console.log(
        `in one process  ${c.base} → ${c.variant}: median ${signedUs(median)} ` +
          `(95% interval ${signedUs(ci95[0])} to ${signedUs(ci95[1])}), ${row.result.pairs} pairs of phases`,
      )
    } catch (err) {
      row.problems = [err.message]
      console.log(`in one process  ${c.base} → ${c.variant}: FAILED: ${err.message}`)
    }
    out.push(row)
  }
  return out
}

/**
 * One plain request before any load: right answer, and the headers that prove
 * the stack under test is really mounted.
 */
function checkResponse(url, variant) {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false, timeout: 5_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        const problems = []
        if (res.statusCode !== 200) problems.push(`status ${res.statusCode}`)
        let json
        try {
          json = JSON.parse(body)
        } catch {
          json = undefined
        }
        if (!isDeepStrictEqual(json, HELLO)) problems.push(`body ${JSON.stringify(body)}`)
        for (const name of variant.expect) if (res.headers[name] === undefined) problems.push(`no ${name}`)
        for (const [name, pattern] of Object.entries(variant.expectValues ?? {})) {
          const value = res.headers[name]
          if (value === undefined) {
            if (!variant.expect.includes(name)) problems.push(`no ${name}`)
          } else if (!pattern.test(String(value))) problems.push(`${name}: ${value}`)
        }
        for (const name of variant.expectAbsent ?? []) {
          if (res.headers[name] !== undefined) problems.push(`unexpected ${name}: ${res.headers[name]}`)
        }
        if (problems.length === 0) resolve()
        else reject(new Error(`GET / check failed: ${problems.join(', ')}`))
      })
    })
    req.on('timeout', () => req.destroy(new Error('GET / check timed out')))
    req.on('error', reject)
  })
}

/**
 * One measured run of one variant, in a server process of its own; with
 * `--baseline`, of the given `build` ('baseline' or 'current'), checked to
 * have imported that build's Aegis.
 */
async function measure(variant, options, build) {
  const { generator, duration, warmup, connections, pin } = options
  const server = await spawnServer({
    script: SERVER,
    args: [variant.name],
    ...(build !== undefined && { env: serverEnv(build, options.baseline) }),
  })
  // With --pin: the server alone on CPU 1, the load generator on CPU 0.
  const cpus = pin ? '0' : undefined
  try {
    if (build !== undefined) {
      const wrong = importProblems(server.aegis, build, options.baseline)
      if (wrong.length > 0) throw new Error(wrong.join('; '))
    }
    if (pin) pinProcessTree(server.pid, '1')
    const url = `http://127.0.0.1:${server.port}/`
    await checkResponse(url, variant)
    if (warmup > 0) {
      // Lets the JIT settle; a warm-up that fails predicts a failed run.
      const warm = await generator.run({ url, duration: warmup, connections, cpus })
      const problems = problemsOf(warm)
      if (problems.length > 0) throw new Error(`warm-up: ${problems.join(', ')}`)
    }
    // A variant's own probe (the Redis ones: no insurance decision, Redis' CPU) brackets the window too.
    const probeBefore = variant.probe === undefined ? undefined : await server.probe()
    const before = await server.cpuUsage()
    const load = await generator.run({ url, duration, connections, cpus })
    const after = await server.cpuUsage()
    const probeAfter = variant.probe === undefined ? undefined : await server.probe()
    const cpu = { userUs: after.user - before.user, systemUs: after.system - before.system }
    const problems = [...problemsOf(load), ...(probeAfter?.problems ?? [])]
    const redisCpuUs =
      probeAfter?.redisCpuUs === undefined ? undefined : probeAfter.redisCpuUs - probeBefore.redisCpuUs
    return {
      ok: problems.length === 0,
      problems,
      ...load,
      cpu,
      cpuUsPerRequest: (cpu.userUs + cpu.systemUs) / load.requests,
      ...(redisCpuUs !== undefined && { redisCpuUsPerRequest: redisCpuUs / load.requests }),
      ...(problems.length > 0 && { serverLog: server.log() }),
      // Which Aegis packages the server imported (none: a control of an A/B run).
      ...(build !== undefined && { aegis: (server.aegis ?? []).map((i) => i.name) }),
    }
  } finally {
    await server.stop()
  }
}

const pad = (s, n) => String(s).padEnd(n)

async function main(options) {
  const { rounds, duration, warmup, connections, generator } = options
  const selected = options.variants

  if (generator.check !== undefined) await generator.check()
  const source = await sourceState() // what the build below sees
  if (options.build) await buildPackages()
  checkBuilt()
  // With --baseline: the other tree, where each build's Aegis comes from, and both runs per variant and round.
  const baseline = options.baseline === undefined ? undefined : await prepareBaseline(options.baseline)
  options = { ...options, baseline }
  const imports = baseline === undefined ? undefined : await describeBuilds(baseline)
  const baselineSource = baseline === undefined ? undefined : await sourceState(baseline.dir)
  const builds = baseline === undefined ? [undefined] : ['baseline', 'current']

  const startedAt = new Date()
  const environment = {
    ...environmentInfo(),
  }
  const minutes =
    (rounds * selected.length * builds.length * (warmup + duration + 1) +
      options.inProcess.length * (options.inProcessSeconds + 7)) /
    60
  console.log(
    `${rounds} rounds × ${selected.length} variants${baseline === undefined ? '' : ' × 2 builds'} × ${duration} s (+${warmup} s warm-up), ` +
      `${connections} connections, ${generator.name}` +
      (options.inProcess.length === 0
        ? ''
        : `; then ${options.inProcess.length} comparison(s) in one process × ${options.inProcessSeconds} s`) +
      `; about ${Math.ceil(minutes)} min.\n` +
      `Node ${environment.node}, ${environment.cpus} CPUs, load average ${environment.loadavgAtStart.map((l) => l.toFixed(2)).join(' ')}`,
  )

  if (baseline !== undefined) {
    console.log(
      `Builds (each server checks it imported its build's Aegis):\n${buildLines(baseline, source, imports).join('\n')}`,
    )
  }

  const width = Math.max(...selected.map((v) => v.name.length))
  const runs = []
  for (let round = 1; round <= rounds; round++) {
    // Start each round one variant later, so no variant always runs first.
    const order = selected.map((_, i) => selected[(i + round - 1) % selected.length])
    for (const variant of order) {
      const pair = baseline === undefined ? builds : pairOrder(round, selected.indexOf(variant))
      for (const build of pair) {
        const dist = distFingerprint(build === 'baseline' ? baseline.dir : undefined)
        const result = await measure(variant, options, build).catch((err) => ({
          ok: false,
          problems: [err.message],
        }))
        runs.push({ round, variant: variant.name, ...(build !== undefined && { build }), dist, ...result })
        const line = `round ${round}/${rounds}  ${pad(variant.name, width)}  ${build === undefined ? '' : pad(build, 9)}`
        console.log(
          result.ok
            ? `${line}${pad(Math.round(result.reqPerSec).toLocaleString('en-US'), 7)} req/s  ` +
                `${result.cpuUsPerRequest.toFixed(1)} µs CPU/req  p99 ${result.latencyMs.p99?.toFixed(2)} ms` +
                (result.redisCpuUsPerRequest === undefined
                  ? ''
                  : `  Redis ${result.redisCpuUsPerRequest.toFixed(1)} µs CPU/req`)
            : `${line}FAILED: ${result.problems.join('; ')}`,
        )
      }
    }
  }

  const inProcess = await measureInProcess(options)

  // With --baseline, the usual report is the current build's; the baseline gets its own table and the comparison.
  const measured = baseline === undefined ? runs : runs.filter((r) => r.build === 'current')
  const summary = summarize(selected, measured)
  const targets = targetChecks(summary)
  const derived = compare(comparisons, measured)
  const verdicts = checkClaims(claims, derived)
  const baselineSummary =
    baseline === undefined
      ? undefined
      : summarize(
          selected,
          runs.filter((r) => r.build === 'baseline'),
        )
  const versus =
    baseline === undefined
      ? undefined
      : compareBuilds(
          selected.map((v) => ({
            label: v.label,
            match: (r) => r.variant === v.name,
            control: runs.every((r) => r.variant !== v.name || !r.ok || r.aegis.length === 0),
          })),
          runs,
        )
  const fingerprints = [...new Set(runs.map((r) => r.dist))]
  environment.loadavgAtEnd = loadavg()
  mkdirSync(RESULTS, { recursive: true })
  const file = `${RESULTS}${startedAt.toISOString().replace(/[:.]/g, '-')}.json`
  const record = {
    date: startedAt.toISOString(),
    command: ['node', 'bench/run.mjs', ...process.argv.slice(2)].join(' '),
    options: {
      rounds,
      duration,
      warmup,
      connections,
      loadGenerator: generator.name,
      pinned: options.pin,
      build: options.build,
      ...(baseline !== undefined && { baseline: options.baseline.spec }),
    },
    environment,
    source,
    ...(baseline !== undefined && {
      baseline: { ...baseline, source: baselineSource, imports },
      baselineSummary,
      versusBaseline: versus,
    }),
    variants: selected, // JSON leaves out their `start` functions
    summary,
    targets,
    comparisons: derived,
    inProcess,
    claims: verdicts,
    distFingerprints: fingerprints,
    runs,
  }
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`)

  const ofBuild = baseline === undefined ? '' : ', current build'
  console.log(
    `\n## Medians over ${rounds} rounds (${generator.name}, ${connections} connections, ${duration} s${ofBuild})\n`,
  )
  console.log(markdownTable(summary))
  if (baseline !== undefined) {
    console.log(`\n## Medians over ${rounds} rounds, baseline build\n\n${markdownTable(baselineSummary)}`)
    console.log(
      `\n## Baseline vs current (CPU per request within ±5%?)\n\n${markdownBuilds(versus, baseline)}`,
    )
  }
  if (targets.length > 0) console.log(`\n## Targets (Aegis defaults)\n\n${markdownTargets(targets)}`)
  if (derived.length > 0) {
    console.log(`\n## Comparisons (paired by round: median, min–max)\n\n${markdownComparisons(derived)}`)
  }
  if (inProcess.length > 0) {
    console.log(
      `\n## Comparisons in one process (both variants served by one process, alternating every 50 ms, ${options.inProcessSeconds} s)\n\n${markdownInProcess(inProcess)}`,
    )
  }
  if (verdicts.length > 0) console.log(`\n## Rate-limiter claims\n\n${markdownClaims(verdicts)}`)
  // A build whose runs saw more than one dist/: rebuilt during the run.
  if (builds.some((b) => new Set(runs.filter((r) => r.build === b).map((r) => r.dist)).size > 1)) {
    console.log(
      `\nWARNING: packages/*/dist changed during the run (${fingerprints.join(', ')}): somebody rebuilt ` +
        `them; the runs did not all measure the same code (each run's "dist" is in the JSON).`,
    )
  }
  const failed = runs.filter((r) => !r.ok)
  for (const r of failed)
    console.log(
      `\nFAILED round ${r.round} ${r.variant}${r.build === undefined ? '' : ` (${r.build})`}: ${r.problems.join('; ')}`,
    )
  for (const c of inProcess.filter((c) => c.problems !== undefined))
    console.log(`\nFAILED in one process ${c.base} → ${c.variant}: ${c.problems.join('; ')}`)
  console.log(`\nResults: ${file}`)
  if (failed.length > 0 || inProcess.some((c) => c.problems !== undefined)) process.exitCode = 1
}

let options
try {
  options = parseOptions(process.argv.slice(2))
} catch (err) {
  console.error(`bench: ${err.message}\n\n${USAGE}`)
  process.exit(2)
}
if (options.help) console.log(USAGE)
else {
  try {
    await main(options)
  } catch (err) {
    console.error(`bench: ${err.message}`)
    process.exitCode = 1
  }
}
