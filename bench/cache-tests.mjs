/**
 * The HTTP cache conformance suite (npm `http-cache-tests`, cache-tests.fyi)
 * through the Aegis gateway: `node bench/cache-tests.mjs [--mode m[,m…]] [--json file]`.
 *
 * The suite's origin runs in a process of its own on 127.0.0.1
 * (lib/cache-tests-origin.mjs); each mode runs the whole suite once, from
 * another process (lib/cache-tests-client.mjs): `direct` against the origin
 * itself — the baseline, always run first —, the others through an Aegis
 * gateway on node:http in this process, one proxy route `/` → origin, with
 * the options of MODES below, and `nginx` through nginx' proxy_cache (when
 * nginx is installed), a reference shared cache measured the same way. Then,
 * per mode: required tests passed, failed and total, the tests that pass
 * direct but not through the gateway (regressions), the stale-serving tests
 * the ghost cache's issue (16) names, and the issue's verdicts; a markdown
 * report on stdout, raw results with `--json`. bench/README.md says how to
 * read it.
 *
 * Everything stays on 127.0.0.1 and nothing is fetched: the suite comes with
 * `pnpm install`. The run stops itself after `--timeout` seconds.
 */
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { importAegis } from './lib/aegis.mjs'
import { scriptArgs } from './lib/args.mjs'
import { buildPackages, checkBuilt, environmentInfo, sourceState } from './lib/build.mjs'
import {
  STALE_TESTS,
  SUITE_VERSION,
  detailOf,
  loadGroups,
  outcomeOf,
  referenceCounts,
  testsRun,
} from './lib/cache-tests-suite.mjs'
import { spawnServer, spawnTracked } from './lib/children.mjs'
import { startNginxCache } from './lib/cache-tests-nginx.mjs'

// ─── What each mode measures: adjust here. ──────────────────────────────────
/**
 * The suite sends ~1,500 requests in half a minute from one address: the
 * default limiter (1000 a minute per client) would answer 429s that say
 * nothing about caching (bench/variants.mjs raises it for wrk the same way).
 */
const NO_LIMIT = { limiter: { points: 1_000_000_000, duration: 60 } }

/**
 * What keeps a cacheless gateway out of the suite's way (`defaults` shows
 * what each one is for): its invalidation tests send `M-SEARCH`, which the
 * validator refuses by default (405); and a retried 502/503/504 reaches the
 * origin twice, which the suite reports as a retry instead of judging the test.
 */
const TRANSPARENT = {
  ...NO_LIMIT,
  validator: { methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'M-SEARCH'] },
}
const TRANSPARENT_ROUTE = { retry: false }

/**
 * Each mode's gateway: `options` for `createAegis()` (top level) and `route`
 * for its one proxy route (`prefix: '/'` → the origin is added). `direct`
 * has no gateway: the baseline, always run first. A mode whose options Aegis
 * refuses is reported as not available, with Aegis' reason, and the other
 * modes still run.
 */
const MODES = {
  direct: undefined,
  defaults: { options: NO_LIMIT, route: {} },
  off: { options: TRANSPARENT, route: TRANSPARENT_ROUTE },
  ghost: { options: { ...TRANSPARENT, ghost: {} }, route: TRANSPARENT_ROUTE },
  // A shared cache: fresh hits served; an answer without explicit freshness is never fresh (ttl 0).
  shared: {
    options: { ...TRANSPARENT, ghost: { serveFresh: true, ttl: 0, learn: [200, 203, 301, 308, 404, 410] } },
    route: TRANSPARENT_ROUTE,
  },
  // Not Aegis: nginx' proxy_cache (lib/cache-tests-nginx.mjs), a shared cache measured the same way.
  nginx: 'reference',
}
// ─────────────────────────────────────────────────────────────────────────────

const ORIGIN = fileURLToPath(new URL('lib/cache-tests-origin.mjs', import.meta.url))
const CLIENT = fileURLToPath(new URL('lib/cache-tests-client.mjs', import.meta.url))
// One suite run takes ~20 s (tests pause 3 s between requests, 100 tests at a time).
const RUN_TIMEOUT_MS = 240_000
const LOG_TAIL_CHARS = 4_000

const USAGE = `Usage: node bench/cache-tests.mjs [options]

  --mode a,b     modes to run (default all): ${Object.keys(MODES).join(', ')};
                 direct, the baseline, always runs first
  --json FILE    write the raw results (per mode, test id → result) and the summary
  --skip-build   use the packages' existing dist/ (default: build packages/* first
                 when an Aegis mode runs)
  --timeout S    stop everything after S seconds (default 900)
  -h, --help     this text`

const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    mode: { type: 'string', default: Object.keys(MODES).join(',') },
    json: { type: 'string' },
    'skip-build': { type: 'boolean', default: false },
    timeout: { type: 'string', default: '900' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const requested = values.mode.split(',').map((m) => m.trim())
const unknown = requested.filter((m) => !Object.hasOwn(MODES, m))
const timeoutS = Number(values.timeout)
if (unknown.length > 0 || !(timeoutS > 0)) {
  console.error(unknown.length > 0 ? `unknown mode: ${unknown.join(', ')}` : 'bad --timeout')
  console.error(USAGE)
  process.exit(2)
}
const modes = ['direct', ...new Set(requested.filter((m) => m !== 'direct'))]

// The whole run is bounded: past it, exit (lib/children.mjs kills the origin and the client).
setTimeout(() => {
  console.error(`cache-tests: stopped after ${timeoutS} s (--timeout)`)
  process.exit(2)
}, timeoutS * 1000).unref()

/**
 * Run the suite once against `base`, in its own process.
 *
 * @returns {Promise<{ results: Record<string, true | [string, string]>, answers: object }>}
 */
function runSuite(base) {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(process.execPath, [CLIENT, base], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
    let log = ''
    const keep = (d) => (log = (log + d).slice(-LOG_TAIL_CHARS))
    child.stdout.setEncoding('utf8').on('data', keep)
    child.stderr.setEncoding('utf8').on('data', keep)
    let got
    child.on('message', (m) => {
      if (m?.type === 'results') got = { results: m.results, answers: m.answers }
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      if (got !== undefined) resolve(got)
      else
        reject(
          new Error(`suite run against ${base} ended (${signal ?? `code ${code}`}) without results\n${log}`),
        )
    })
  })
}

/** Why Aegis refused a mode's options, or undefined for any other error. */
const refusedOptions = (err) =>
  err?.code === 'AEGIS_ERR_CONFIG'
    ? (err.issues?.map((i) => `${i.path}: ${i.message}`).join('; ') ?? err.message)
    : undefined

/**
 * The gateway of `mode` in front of `origin`, listening on 127.0.0.1, with a
 * count of the events its bus emitted (a breaker that opened, an ejected
 * upstream: the suite's 5xx answers could trip them); or why Aegis refused
 * the mode's options.
 */
async function startGateway(mode, origin) {
  const { createAegis } = await importAegis('core')
  const { options, route } = MODES[mode]
  let core
  try {
    core = createAegis({ ...options, proxy: [{ ...route, prefix: '/', upstreams: [origin] }] })
  } catch (err) {
    const refused = refusedOptions(err)
    if (refused === undefined) throw err
    return { refused }
  }
  const events = {}
  core.events.onAny((e) => (events[e.type] = (events[e.type] ?? 0) + 1))
  const server = createServer(core.handler())
  core.attach(server)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    events,
    stop: async () => {
      await core.close()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/**
 * What the second request of a stale test got: `stale` (a stored answer: the
 * origin counted fewer requests than that), `origin`, `not-origin` (an answer
 * the origin did not write: the gateway's error), or `no-answer`.
 */
function secondAnswer(answers, id) {
  const a = answers?.[id]?.['2']
  if (a === undefined) return { kind: 'untested', text: '—' }
  if (a.error !== undefined) return { kind: 'no-answer', text: 'no answer' }
  if (a.serverRequestCount === null) return { kind: 'not-origin', text: `${a.status} not from origin` }
  return Number(a.serverRequestCount) < 2
    ? { kind: 'stale', text: `${a.status} stale` }
    : { kind: 'origin', text: `${a.status} origin` }
}

/** Per-mode counts over the tests run, by kind; `regressions`: passing direct, not here. */
function summarize(results, direct) {
  const of = (kind) => tests.filter((t) => t.kind === kind)
  const passed = (list) => list.filter((t) => results[t.id] === true).length
  const required = of('required')
  const notPassed = required.filter((t) => results[t.id] !== true)
  return {
    required: {
      passed: passed(required),
      failed: notPassed.length,
      total: required.length,
      // Of the failed: not set up, or the exchange broke, rather than the cache's fault.
      setupOrError: notPassed.filter((t) => ['setup', 'error'].includes(outcomeOf(results[t.id]))).length,
    },
    optimal: { passed: passed(of('optimal')), total: of('optimal').length },
    check: { yes: passed(of('check')), total: of('check').length },
    regressions:
      direct === undefined
        ? []
        : tests
            .filter((t) => direct[t.id] === true && results[t.id] !== true)
            .map((t) => ({ id: t.id, kind: t.kind, result: results[t.id] })),
  }
}

/**
 * The ghost cache's issue, as this run can judge it. The stale-close-* tests
 * of this suite version cannot pass (they want a 200 from the origin on a
 * request it answers by closing the connection; every cache in its published
 * results fails them), so "no stale served" is judged as the suite's later
 * version does: an answer that the origin did not write, hence not a stored one.
 */
function verdicts(mode, summary, results, answers) {
  const out = []
  if (mode === 'ghost') {
    out.push(['no regression against direct', summary.regressions.length === 0])
    for (const id of STALE_TESTS.serve) out.push([`${id} passes (stale served)`, results[id] === true])
  }
  if (mode === 'ghost' || mode === 'shared') {
    for (const id of STALE_TESTS.mustNotServe)
      out.push([
        `${id}: no stale served (answered, not from the store)`,
        secondAnswer(answers, id).kind === 'not-origin',
      ])
  }
  if (mode === 'shared') {
    // The issue's bar is nginx; the other shared caches are in the report's reference line.
    const nginx = references.find((r) => r.name === 'nginx')
    out.push([
      `required passed ≥ nginx's ${nginx.passed}/${nginx.total} (the suite's shipped results)`,
      summary.required.passed >= nginx.passed,
    ])
  }
  return out
}

const SYMBOL = { pass: 'pass', fail: 'FAIL', setup: 'setup', error: 'error', untested: '—' }

function markdown(report) {
  const lines = [`## cache-tests: http-cache-tests ${report.version}, ${report.finished}`, '']
  lines.push(
    '| Mode | Required passed | Required failed (setup/error) | Required total | Optimal passed | Checks yes | Regressions vs direct |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  )
  for (const [mode, m] of Object.entries(report.modes)) {
    if (m.summary === undefined) {
      lines.push(
        `| ${mode} | ${m.refused !== undefined ? `not available: ${m.refused}` : 'the run broke'} | | | | | |`,
      )
      continue
    }
    const s = m.summary
    const label =
      m.version === undefined ? mode : `${mode} (${m.version.replace(/^nginx version: nginx\//, '')})`
    lines.push(
      `| ${label} | ${s.required.passed} | ${s.required.failed} (${s.required.setupOrError}) | ${s.required.total} | ${s.optimal.passed}/${s.optimal.total} | ${s.check.yes}/${s.check.total} | ${mode === 'direct' ? '—' : s.regressions.length} |`,
    )
  }
  lines.push(
    '',
    `Shared caches, by the results this suite version ships (required passed of ${report.references[0]?.total}): ` +
      report.references.map((r) => `${r.name} ${r.passed}`).join(', ') +
      '.',
  )

  const ran = Object.entries(report.modes).filter(([, m]) => m.results !== undefined)
  const noisy = ran.filter(([, m]) => Object.keys(m.gatewayEvents ?? {}).length > 0)
  if (noisy.length > 0) {
    lines.push('', 'Gateway events during the run (a breaker or an ejection can change answers):')
    for (const [mode, m] of noisy)
      lines.push(
        `- ${mode}: ${Object.entries(m.gatewayEvents)
          .map(([type, n]) => `${type} ×${n}`)
          .join(', ')}`,
      )
  }

  lines.push(
    '',
    '### Stale',
    '',
    'Result, then what request 2 got (the origin closes the connection, or answers 503).',
    '',
    `| Test | Kind | ${ran.map(([mode]) => mode).join(' | ')} |`,
    `| --- | --- | ${ran.map(() => '---').join(' | ')} |`,
  )
  for (const id of Object.values(STALE_TESTS).flat()) {
    const kind = tests.find((t) => t.id === id)?.kind ?? 'not in this suite version'
    const cells = ran.map(
      ([, m]) => `${SYMBOL[outcomeOf(m.results[id])]} · ${secondAnswer(m.answers, id).text}`,
    )
    lines.push(`| \`${id}\` | ${kind} | ${cells.join(' | ')} |`)
  }

  for (const [mode, m] of ran) {
    // A cache that stores fails what a cacheless origin passes by design (nginx: ~50 tests).
    if (mode === 'direct' || mode === 'nginx') continue
    lines.push('', `### Regressions: ${mode}`, '')
    if (m.summary.regressions.length === 0) lines.push('None: every test that passes direct passes.')
    for (const r of m.summary.regressions) lines.push(`- \`${r.id}\` (${r.kind}): ${detailOf(r.result)}`)
  }

  const judged = ran.filter(([, m]) => m.verdicts.length > 0)
  if (judged.length > 0) {
    lines.push('', '### Verdicts (issue 16)', '')
    for (const [mode, m] of judged)
      for (const [what, ok] of m.verdicts) lines.push(`- ${mode}: ${what}: ${ok ? 'yes' : 'NO'}`)
  }
  return lines.join('\n')
}

const environment = environmentInfo()
// The Aegis modes import packages/core's dist/ (lib/aegis.mjs): measure the source as it is now.
if (modes.some((m) => typeof MODES[m] === 'object')) {
  if (!values['skip-build']) await buildPackages()
  checkBuilt()
}
const tests = testsRun(await loadGroups())
const references = referenceCounts(tests)
const origin = await spawnServer({ script: ORIGIN, args: ['cache-tests-origin'] })
const originUrl = `http://127.0.0.1:${origin.port}`
const ran = {}
let broken = false
try {
  for (const mode of modes) {
    const started = Date.now()
    let gateway
    if (mode !== 'direct') {
      gateway = mode === 'nginx' ? await startNginxCache(originUrl) : await startGateway(mode, originUrl)
      if (gateway.refused !== undefined) {
        ran[mode] = { gateway: MODES[mode], refused: gateway.refused }
        console.error(`${mode}: not available (${gateway.refused})`)
        continue
      }
    }
    try {
      const { results, answers } = await runSuite(gateway?.base ?? originUrl)
      const summary = summarize(results, ran.direct?.results)
      ran[mode] = {
        gateway: MODES[mode],
        seconds: Math.round((Date.now() - started) / 1000),
        summary,
        verdicts: verdicts(mode, summary, results, answers),
        gatewayEvents: gateway?.events,
        ...(gateway?.version !== undefined && { version: gateway.version }),
        results,
        answers,
      }
      console.error(
        `${mode}: ${summary.required.passed}/${summary.required.total} required passed in ${ran[mode].seconds} s`,
      )
    } catch (err) {
      broken = true
      ran[mode] = { gateway: MODES[mode], error: String(err?.stack ?? err) }
      console.error(`${mode}: the run broke: ${err?.stack ?? err}`)
    } finally {
      await gateway?.stop()
    }
  }
} finally {
  await origin.stop()
}

const report = {
  suite: 'http-cache-tests',
  version: SUITE_VERSION,
  finished: new Date().toISOString(),
  source: await sourceState(),
  environment,
  tests,
  references,
  modes: ran,
}
console.log(markdown(report))
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`)
process.exit(broken ? 1 : 0)
