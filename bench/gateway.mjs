/**
 * The gateway benchmark (`node bench/gateway.mjs`): one backend, and in front of
 * it each proxy in turn — nginx (default buffers, and 64 KiB buffers),
 * node-http-proxy with a keep-alive agent, @fastify/http-proxy,
 * http-proxy-middleware on Express, the Aegis gateway on Fastify, Express
 * and Koa, and the standalone one of `aegis serve` (node:http) — plus the backend hit directly. Small JSON answers and 100 KiB
 * answers, wrk -t1, interleaved rounds (each round starts one variant later).
 * Reports req/s, the ratio to the direct run of the same round, and the proxy
 * process' CPU per request (nginx: master and worker, from /proc). Method and
 * caveats: bench/README.md.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
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
import { childPids, pinProcessTree, spawnServer, startServer } from './lib/children.mjs'
import { generators, getWhole, problemsOf } from './lib/load.mjs'
import { nginxVersion, startNginx } from './lib/nginx.mjs'
import { median } from './lib/report.mjs'
import { LARGE_BYTES, SMALL } from './gateway-proxies.mjs'

const PROXIES = fileURLToPath(new URL('gateway-proxies.mjs', import.meta.url))
const RESULTS = fileURLToPath(new URL('results/', import.meta.url))
const VARIANTS = [
  'direct',
  'nginx',
  'nginx-64k',
  'node-http-proxy',
  'fastify-http-proxy',
  'express-hpm',
  'fastify-aegis',
  'express-aegis',
  'koa-aegis',
  'aegis-serve',
]
const BODIES = { small: '/small', large: '/large' }

const USAGE = `Usage: node bench/gateway.mjs [options]

  --rounds N        interleaved rounds (default 5)
  --duration S      seconds of load per run (default 5)
  --warmup S        seconds of unmeasured load first (default 2)
  --connections C   wrk connections (default 50)
  --only a,b        these variants only (direct is always measured): ${VARIANTS.join(', ')}
  --pin             the proxy on CPU 1, wrk and the backend on CPU 0 (taskset; needs 2+ CPUs)
  --skip-build      measure the packages' existing dist/
  --baseline B      also measure another build, interleaved: B is a directory made by
                    bench/snapshot.mjs (or a checkout with built packages/), or a commit
                    (snapshotted into a temporary directory); every variant then runs on
                    both builds in each round, and the report compares them
  -h, --help        this text`

const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    only: { type: 'string' },
    pin: { type: 'boolean', default: false },
    'skip-build': { type: 'boolean', default: false },
    baseline: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const int = (name, min) => {
  const n = Number(values[name])
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer of at least ${min}`)
  return n
}
const rounds = int('rounds', 1)
const duration = int('duration', 1)
const warmup = int('warmup', 0)
const connections = int('connections', 1)
let selected = VARIANTS
if (values.only !== undefined) {
  const names = values.only.split(',').map((s) => s.trim())
  const unknown = names.filter((n) => !VARIANTS.includes(n))
  if (unknown.length > 0) throw new Error(`unknown variant(s): ${unknown.join(', ')}`)
  selected = ['direct', ...names.filter((n) => n !== 'direct')]
}
/** `nginx -v`'s answer (it prints to stderr), or `undefined` when there is no nginx. */
const nginx = nginxVersion()
const hasNginx = nginx !== undefined
if (!hasNginx && selected.some((v) => v.startsWith('nginx'))) {
  console.log('nginx not found (apt-get install nginx-light): its variants are skipped')
  selected = selected.filter((v) => !v.startsWith('nginx'))
}

const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim())

/** utime + stime of a process and its children (nginx: master and worker), in µs. */
function procCpuUs(pid) {
  const pids = [pid, ...childPids(pid)]
  let ticks = 0
  for (const p of pids) {
    const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(fields[11]) + Number(fields[12]) // utime, stime (fields 14 and 15 of stat)
  }
  return ticks * TICK_US
}

/** nginx as a reverse proxy with upstream keep-alive; `bigBuffers`: 64 KiB proxy buffers. */
async function startNginxProxy(backendPort, bigBuffers) {
  const proxy = await startNginx({
    name: 'bench',
    workerConnections: 4096,
    http: () => [`upstream backend { server 127.0.0.1:${backendPort}; keepalive 64; }`],
    server: [
      'location / {',
      '  proxy_pass http://backend;',
      '  proxy_http_version 1.1;',
      '  proxy_set_header Connection "";',
      ...(bigBuffers
        ? ['  proxy_buffer_size 64k;', '  proxy_buffers 8 64k;', '  proxy_busy_buffers_size 128k;']
        : []),
      '}',
    ],
  })
  return {
    port: proxy.port,
    pid: proxy.pid,
    // Master and worker, from /proc: nginx is no Node child that could report its own.
    cpuUsage: async () => ({ user: procCpuUs(proxy.pid), system: 0 }),
    stop: proxy.stop,
  }
}

/** GET `url`: 200 and the backend's exact body. */
async function check(url) {
  const { status, body } = await getWhole(url)
  const ok =
    status === 200 && (url.endsWith('/large') ? body.length === LARGE_BYTES : body.toString() === SMALL)
  if (!ok) throw new Error(`GET ${url}: ${status}, ${body.length} bytes`)
}

/** Where wrk runs with --pin: beside the backend, away from the proxy. */
const WRK_CPUS = values.pin ? '0' : undefined

/**
 * One measured run. With `--baseline`, `build` says which build's Aegis a Node
 * proxy imports ('baseline' or 'current'), checked once it listens; direct
 * and nginx load none (the A/B report's controls).
 */
async function measure(variant, backend, path, build, baseline) {
  const proxy =
    variant === 'direct'
      ? undefined
      : variant.startsWith('nginx')
        ? await startNginxProxy(backend.port, variant === 'nginx-64k')
        : await spawnServer({
            script: PROXIES,
            args: [variant, String(backend.port)],
            ...(build !== undefined && { env: serverEnv(build, baseline) }),
          })
  try {
    if (build !== undefined) {
      const wrong = importProblems(proxy?.aegis, build, baseline)
      if (wrong.length > 0) throw new Error(wrong.join('; '))
    }
    if (values.pin && proxy !== undefined) pinProcessTree(proxy.pid, '1')
    const port = proxy?.port ?? backend.port
    const url = `http://127.0.0.1:${port}${path}`
    await check(url)
    if (warmup > 0) await generators.wrk.run({ url, duration: warmup, connections, cpus: WRK_CPUS })
    const measured = proxy ?? backend
    const before = await measured.cpuUsage()
    const load = await generators.wrk.run({ url, duration, connections, cpus: WRK_CPUS })
    const after = await measured.cpuUsage()
    const problems = problemsOf(load)
    const cpuUs = after.user - before.user + (after.system - before.system)
    return {
      ok: problems.length === 0,
      problems,
      ...load,
      cpuUsPerRequest: cpuUs / load.requests,
      // Which Aegis packages the proxy imported (none: a control of an A/B run).
      ...(build !== undefined && { aegis: (proxy?.aegis ?? []).map((i) => i.name) }),
    }
  } finally {
    await proxy?.stop()
  }
}

const medianOf = (xs) => median(xs.filter(Number.isFinite)) ?? Number.NaN

async function main() {
  await generators.wrk.check()
  const source = await sourceState()
  if (!values['skip-build']) await buildPackages()
  checkBuilt()
  // With --baseline: the other tree, where each build's Aegis comes from, and both runs per variant and round.
  const baseline = values.baseline === undefined ? undefined : await prepareBaseline(values.baseline)
  const imports = baseline === undefined ? undefined : await describeBuilds(baseline)
  const baselineSource = baseline === undefined ? undefined : await sourceState(baseline.dir)
  const builds = baseline === undefined ? [undefined] : ['baseline', 'current']
  const environment = {
    ...environmentInfo(),
    nginx: nginx ?? 'absent',
    pinned: values.pin ? 'proxy on CPU 1; wrk and backend on CPU 0' : false,
  }
  const minutes = (rounds * selected.length * 2 * builds.length * (warmup + duration + 1)) / 60
  console.log(
    `${rounds} rounds × ${selected.length} variants × 2 bodies${baseline === undefined ? '' : ' × 2 builds'} × ${duration} s (+${warmup} s warm-up), ` +
      `${connections} connections, wrk -t1${values.pin ? ', pinned (proxy CPU 1, wrk and backend CPU 0)' : ''}; about ${Math.ceil(minutes)} min. Node ${process.version}, ${environment.cpus} CPUs.`,
  )
  if (baseline !== undefined) {
    console.log(
      `Builds (each proxy checks it imported its build's Aegis):\n${buildLines(baseline, source, imports).join('\n')}`,
    )
  }
  const backend = await startServer(PROXIES, 'backend')
  if (values.pin) pinProcessTree(backend.pid, '0')
  const runs = []
  try {
    for (let round = 1; round <= rounds; round++) {
      const order = selected.map((_, i) => selected[(i + round - 1) % selected.length])
      for (const [b, [body, path]] of Object.entries(BODIES).entries()) {
        for (const variant of order) {
          // A/B: both builds back to back, the first alternating (over rounds, variants and bodies).
          const pair = baseline === undefined ? builds : pairOrder(round, selected.indexOf(variant) + b)
          for (const build of pair) {
            const dist = distFingerprint(build === 'baseline' ? baseline.dir : undefined)
            const r = await measure(variant, backend, path, build, baseline).catch((err) => ({
              ok: false,
              problems: [err.message],
            }))
            runs.push({ round, body, variant, ...(build !== undefined && { build }), dist, ...r })
            console.log(
              `round ${round}/${rounds} ${body.padEnd(5)} ${variant.padEnd(18)} ${build === undefined ? '' : build.padEnd(9)}` +
                (r.ok
                  ? `${Math.round(r.reqPerSec).toLocaleString('en-US').padStart(7)} req/s  ${r.cpuUsPerRequest.toFixed(1)} µs CPU/req`
                  : `FAILED: ${r.problems.join('; ')}`),
            )
          }
        }
      }
    }
  } finally {
    await backend.stop()
  }

  // Per body and variant: median req/s, median ratio to direct (paired by round), median CPU.
  // `ok`: the successful runs of one build (with --baseline, each build is summarized alone).
  const summarize = (ok) => {
    const at = (round, body, variant) =>
      ok.find((r) => r.round === round && r.body === body && r.variant === variant)
    const summary = {}
    for (const body of Object.keys(BODIES)) {
      summary[body] = {}
      for (const variant of selected) {
        const mine = ok.filter((r) => r.body === body && r.variant === variant)
        const ratios = mine.map((r) => r.reqPerSec / (at(r.round, body, 'direct')?.reqPerSec ?? Number.NaN))
        summary[body][variant] = {
          runs: mine.length,
          reqPerSec: medianOf(mine.map((r) => r.reqPerSec)),
          vsDirect: medianOf(ratios),
          cpuUsPerRequest: variant === 'direct' ? Number.NaN : medianOf(mine.map((r) => r.cpuUsPerRequest)),
          backendCpu: variant === 'direct' ? medianOf(mine.map((r) => r.cpuUsPerRequest)) : undefined,
        }
      }
    }
    // The issue's claims, paired by round: req/s of `a` over `b`, and CPU per request of `b` over `a`.
    const perRound = (body, a, b) =>
      ok
        .filter((r) => r.body === body && r.variant === a)
        .map((r) => ({
          round: r.round,
          ratio: r.reqPerSec / (at(r.round, body, b)?.reqPerSec ?? Number.NaN),
          cpuRatio: (at(r.round, body, b)?.cpuUsPerRequest ?? Number.NaN) / r.cpuUsPerRequest,
        }))
    const claims = [
      [
        'Fastify gateway ≥ 1.3x @fastify/http-proxy (small)',
        'small',
        'fastify-aegis',
        'fastify-http-proxy',
        1.3,
      ],
      [
        'Fastify gateway ≥ 1.3x @fastify/http-proxy (100 KiB)',
        'large',
        'fastify-aegis',
        'fastify-http-proxy',
        1.3,
      ],
      ['Express gateway ≥ 1.2x http-proxy-middleware (small)', 'small', 'express-aegis', 'express-hpm', 1.2],
      [
        'Express gateway ≥ 1.2x http-proxy-middleware (100 KiB)',
        'large',
        'express-aegis',
        'express-hpm',
        1.2,
      ],
      ['Fastify gateway ≥ nginx, default buffers (100 KiB)', 'large', 'fastify-aegis', 'nginx', 1],
      ['Express gateway ≥ nginx, default buffers (100 KiB)', 'large', 'express-aegis', 'nginx', 1],
      // Issue 18: aegis serve's gateway (node:http, no framework) at least matches the Fastify one.
      ['Standalone gateway ≥ Fastify gateway (small)', 'small', 'aegis-serve', 'fastify-aegis', 1],
      ['Standalone gateway ≥ Fastify gateway (100 KiB)', 'large', 'aegis-serve', 'fastify-aegis', 1],
    ]
      .filter(([, , a, b]) => selected.includes(a) && selected.includes(b))
      .map(([label, body, a, b, target]) => {
        const byRound = perRound(body, a, b)
        const ratio = medianOf(byRound.map((r) => r.ratio))
        const cpuRatio = medianOf(byRound.map((r) => r.cpuRatio))
        return {
          label,
          body,
          variant: a,
          base: b,
          ratio,
          cpuRatio,
          rounds: byRound,
          target,
          met: ratio >= target,
        }
      })
    return { summary, claims }
  }
  const ofBuild = (build) => runs.filter((r) => r.ok && r.build === build)
  const { summary, claims } = summarize(
    baseline === undefined ? runs.filter((r) => r.ok) : ofBuild('current'),
  )
  const baselineSummary = baseline === undefined ? undefined : summarize(ofBuild('baseline')).summary
  const versus =
    baseline === undefined
      ? undefined
      : compareBuilds(
          Object.keys(BODIES).flatMap((body) =>
            selected.map((variant) => ({
              label: `${variant} (${body})`,
              match: (r) => r.body === body && r.variant === variant,
              control: runs.every((r) => r.variant !== variant || !r.ok || r.aegis.length === 0),
            })),
          ),
          runs,
        )

  mkdirSync(RESULTS, { recursive: true })
  const file = `${RESULTS}gateway-${new Date().toISOString().replace(/[:.]/g, '-')}.json`
  environment.loadavgAtEnd = loadavg()
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        command: ['node', 'bench/gateway.mjs', ...process.argv.slice(2)].join(' '),
        options: {
          rounds,
          duration,
          warmup,
          connections,
          ...(baseline !== undefined && { baseline: baseline.spec }),
        },
        environment,
        source,
        ...(baseline !== undefined && {
          baseline: { ...baseline, source: baselineSource, imports },
          baselineSummary,
          versusBaseline: versus,
        }),
        summary,
        claims,
        runs,
      },
      null,
      2,
    )}\n`,
  )
  const fmt = (x, d = 0) =>
    Number.isFinite(x)
      ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
      : '—'
  const tables = (summary, build) => {
    for (const body of Object.keys(BODIES)) {
      console.log(
        `\n## ${body === 'small' ? 'Small JSON' : '100 KiB'} answers (medians over ${rounds} rounds${build === undefined ? '' : `, ${build} build`})\n`,
      )
      console.log('| Variant | req/s | vs direct | proxy CPU µs/req |\n| --- | ---: | ---: | ---: |')
      for (const variant of selected) {
        const s = summary[body][variant]
        console.log(
          `| ${variant} | ${fmt(s.reqPerSec)} | ${fmt(s.vsDirect, 2)}x | ${variant === 'direct' ? `(backend ${fmt(s.backendCpu, 1)})` : fmt(s.cpuUsPerRequest, 1)} |`,
        )
      }
    }
  }
  tables(summary, baseline === undefined ? undefined : 'current')
  if (baseline !== undefined) {
    tables(baselineSummary, 'baseline')
    console.log(
      `\n## Baseline vs current (CPU per request within ±5%?)\n\n${markdownBuilds(versus, baseline)}`,
    )
  }
  if (claims.length > 0) {
    console.log(
      '\n## Claims (paired by round, median; CPU ratio = peer µs ÷ Aegis µs per request)\n\n| Claim | req/s ratio | per round | CPU ratio | Met |\n| --- | ---: | --- | ---: | :---: |',
    )
    for (const c of claims) {
      const perRoundRatios = c.rounds.map((r) => fmt(r.ratio, 2)).join(', ')
      console.log(
        `| ${c.label} | ${fmt(c.ratio, 2)}x | ${perRoundRatios} | ${fmt(c.cpuRatio, 2)}x | ${c.met ? 'yes' : 'no'} |`,
      )
    }
  }
  const failed = runs.filter((r) => !r.ok)
  for (const r of failed)
    console.log(
      `\nFAILED round ${r.round} ${r.body} ${r.variant}${r.build === undefined ? '' : ` (${r.build})`}: ${r.problems.join('; ')}`,
    )
  console.log(`\nResults: ${file}`)
  if (failed.length > 0) process.exitCode = 1
}

await main()
