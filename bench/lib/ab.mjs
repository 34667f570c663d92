/**
 * Two builds in one run (`--baseline <dir|commit>` of run.mjs and
 * gateway.mjs): the baseline tree, the order of each pair of runs, the check
 * that every server ran the build it was meant to, and the paired report.
 *
 * Each round measures every scenario on both builds back to back; which goes
 * first alternates from one round (and one scenario) to the next — A B, then
 * B A — so a slow drift of the machine lands on both builds alike instead of
 * always on the second. Each pair gives one paired figure: current ÷ baseline
 * of req/s, and current ÷ baseline − 1 of CPU µs per request, taken seconds
 * apart. The report gives their medians over rounds with a distribution-free
 * interval for that median, and says whether the CPU change is within ±5%.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BUILD_ENV } from './aegis.mjs'
import { checkBuilt, ROOT } from './build.mjs'
import { run } from './children.mjs'
import { median } from './report.mjs'

const SNAPSHOT = fileURLToPath(new URL('../snapshot.mjs', import.meta.url))
const PREFLIGHT = fileURLToPath(new URL('aegis.mjs', import.meta.url))

/** The CPU change per request that still counts as "no speed lost" (issue 15). */
export const CPU_TOLERANCE = 0.05

/** How sure the interval of a median must be (five pairs reach it: their min–max covers 94%). */
const INTERVAL_LEVEL = 0.9

/** The two builds, by the name runs and reports use. */
export const BUILDS = ['baseline', 'current']

/**
 * The baseline tree for `spec`: an existing directory (made by snapshot.mjs,
 * or any checkout with built packages/) is used as it is; anything else is a
 * commit, exported and built by snapshot.mjs into
 * `<tmpdir>/aegis-bench-baseline-<sha>` — reused when it is already there, so
 * a second run against the same commit starts at once.
 *
 * @returns {Promise<{ spec: string, dir: string, commit?: string, snapshot: 'given' | 'made' | 'reused' }>}
 */
export async function prepareBaseline(spec) {
  if (existsSync(spec) && statSync(spec).isDirectory()) {
    const dir = realpathSync(spec)
    checkBuilt(dir)
    // A snapshot names its commit; a checkout has a HEAD (its packages/ may differ from it: the JSON's baseline.source says).
    const head = await run('git', ['rev-parse', 'HEAD'], { cwd: dir, timeoutMs: 10_000 }).catch(
      () => undefined,
    )
    const commit = snapshotCommit(dir) ?? (head?.code === 0 ? head.stdout.trim() : undefined)
    return { spec, dir, commit, snapshot: 'given' }
  }
  const parsed = await run('git', ['rev-parse', '--verify', '--quiet', `${spec}^{commit}`], {
    cwd: ROOT,
    timeoutMs: 10_000,
  })
  if (parsed.code !== 0) throw new Error(`--baseline ${spec}: neither a directory nor a commit of ${ROOT}`)
  const commit = parsed.stdout.trim()
  const dir = join(tmpdir(), `aegis-bench-baseline-${commit.slice(0, 12)}`)
  if (snapshotCommit(dir) === commit) {
    try {
      checkBuilt(dir)
      return { spec, dir: realpathSync(dir), commit, snapshot: 'reused' }
    } catch {
      // Half made (interrupted): make it again below.
    }
  }
  console.log(`Baseline: exporting and building ${commit.slice(0, 7)} into ${dir} (bench/snapshot.mjs)…`)
  const out = await run(process.execPath, [SNAPSHOT, dir, commit], { cwd: ROOT, timeoutMs: 900_000 })
  if (out.code !== 0) throw new Error(`snapshot of ${commit} failed:\n${out.stdout}${out.stderr}`)
  checkBuilt(dir)
  return { spec, dir: realpathSync(dir), commit, snapshot: 'made' }
}

/** The commit a snapshot.mjs tree exported, if `dir` is one. */
function snapshotCommit(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, 'SNAPSHOT.json'), 'utf8')).commit
  } catch {
    return undefined
  }
}

/**
 * The environment of a server of `build`: the baseline's names its tree
 * (lib/aegis.mjs); the current one's is the runner's without that variable,
 * whatever the shell had set.
 */
export function serverEnv(build, baseline) {
  const env = { ...process.env }
  delete env[BUILD_ENV]
  if (build === 'baseline') env[BUILD_ENV] = baseline.dir
  return env
}

/** The packages/ directory a build's Aegis must come from. */
const packagesOf = (build, baseline) =>
  join(build === 'baseline' ? baseline.dir : realpathSync(ROOT), 'packages') + sep

/**
 * Why a server of `build` did not run that build's Aegis, if it did not:
 * every adapter and the core it resolved must lie in that build's packages/,
 * and the core the adapter runs on must be that very module.
 */
export function importProblems(imports, build, baseline) {
  const root = packagesOf(build, baseline)
  const problems = []
  for (const i of imports ?? []) {
    for (const file of [i.file, i.core]) {
      if (file !== undefined && !file.startsWith(root))
        problems.push(`${build} build imported ${file}, not from ${root}`)
    }
    if (i.name !== 'core' && i.sameInstance !== true)
      problems.push(
        `${build} build: @aegis/${i.name} does not run on ${i.core ?? 'a resolvable @aegis/core'}`,
      )
  }
  return problems
}

/**
 * The preflight, printed before the first round: where each build's three
 * adapters and their core come from, found by the same code the servers
 * import them with (lib/aegis.mjs), in a process of each build's environment.
 */
export async function describeBuilds(baseline) {
  const out = {}
  for (const build of BUILDS) {
    const res = await run(process.execPath, [PREFLIGHT], {
      cwd: ROOT,
      timeoutMs: 60_000,
      env: serverEnv(build, baseline),
    })
    if (res.code !== 0) throw new Error(`${build} build: cannot import Aegis:\n${res.stderr}`)
    const imports = JSON.parse(res.stdout)
    const problems = importProblems(imports, build, baseline)
    if (problems.length > 0) throw new Error(problems.join('\n'))
    out[build] = imports
  }
  return out
}

/** The preflight's lines for the console. */
export function buildLines(baseline, current, imports) {
  const lines = []
  const head = {
    baseline: `${baseline.commit?.slice(0, 7) ?? '(no commit)'}  ${baseline.dir}  (${{ given: 'as given', made: 'snapshot made', reused: 'snapshot reused' }[baseline.snapshot]})`,
    current: `${current?.commit?.slice(0, 7) ?? '(no commit)'}${current?.uncommittedInPackages?.length > 0 ? ' + uncommitted changes in packages/' : ''}  ${realpathSync(ROOT)}`,
  }
  for (const build of BUILDS) {
    lines.push(`  ${build.padEnd(8)}  ${head[build]}`)
    for (const i of imports[build]) {
      lines.push(
        `    @aegis/${i.name.padEnd(7)} ${i.file}\n      → @aegis/core ${i.core}${i.sameInstance ? ' (the module it runs on)' : ''}`,
      )
    }
  }
  return lines
}

/**
 * The builds of one scenario in one round, in the order to run them: the
 * first alternates with the round and the scenario's place in the list (ABBA
 * over two rounds), so neither build is always measured second.
 */
export const pairOrder = (round, index) => ((round + index) % 2 === 1 ? BUILDS : [...BUILDS].reverse())

/** ln C(n, k), for the binomial tail below. */
const logChoose = (n, k) => {
  let s = 0
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i)
  return s
}

/**
 * A distribution-free interval for the median of `values`: the k-th smallest
 * to the k-th largest, with the largest k whose coverage (from the binomial
 * law, p = ½) is still ≥ `level`. With five rounds that is the min–max, at
 * 94%; with fewer than five the min–max covers less (75% for three), and the
 * report says so.
 */
export function medianInterval(values, level = INTERVAL_LEVEL) {
  const s = [...values].sort((a, b) => a - b)
  const n = s.length
  if (n === 0) return undefined
  // Too few values for `level`: the min–max, whatever it covers (0% for one value).
  let best = { low: s[0], high: s[n - 1], coverage: 1 - 2 / 2 ** n }
  let below = 2 ** -n // P(B ≤ k − 1) for k = 1, B ~ Bin(n, ½)
  for (let k = 1; k <= (n + 1) >> 1; k++) {
    const coverage = 1 - 2 * below
    if (coverage < level) break
    best = { low: s[k - 1], high: s[n - k], coverage }
    below += Math.exp(logChoose(n, k) - n * Math.LN2)
  }
  return best
}

/**
 * The paired comparison, one row per scenario. `scenarios`: `{ label, match,
 * control }`, `match(run)` picking the scenario's runs; `control` marks one
 * that loads no Aegis, whose two sides run the same code: its change is the
 * noise floor of the run.
 */
export function compareBuilds(scenarios, runs) {
  return scenarios.map(({ label, match, control }) => {
    const ok = runs.filter((r) => r.ok && match(r))
    const side = (build) => {
      const mine = ok.filter((r) => r.build === build)
      const cpus = mine.map((r) => r.cpuUsPerRequest)
      return {
        runs: mine.length,
        reqPerSec: median(mine.map((r) => r.reqPerSec)),
        cpuUsPerRequest: median(cpus),
        cpuUsPerRequestMin: cpus.length > 0 ? Math.min(...cpus) : undefined,
        cpuUsPerRequestMax: cpus.length > 0 ? Math.max(...cpus) : undefined,
      }
    }
    const pairs = []
    for (const c of ok.filter((r) => r.build === 'current')) {
      const b = ok.find((r) => r.build === 'baseline' && r.round === c.round)
      if (b === undefined) continue
      pairs.push({
        round: c.round,
        reqPerSecRatio: c.reqPerSec / b.reqPerSec,
        cpuChange: c.cpuUsPerRequest / b.cpuUsPerRequest - 1,
      })
    }
    const baseline = side('baseline')
    const current = side('current')
    const cpuChanges = pairs.map((p) => p.cpuChange)
    const cpuChange = median(cpuChanges)
    const cpuInterval = medianInterval(cpuChanges)
    return {
      label,
      control: control === true,
      pairs: pairs.length,
      baseline,
      current,
      reqPerSecRatio: median(pairs.map((p) => p.reqPerSecRatio)),
      reqPerSecInterval: medianInterval(pairs.map((p) => p.reqPerSecRatio)),
      cpuChange,
      cpuInterval,
      cpuChangeOfMedians:
        baseline.cpuUsPerRequest === undefined || current.cpuUsPerRequest === undefined
          ? undefined
          : current.cpuUsPerRequest / baseline.cpuUsPerRequest - 1,
      ...(control === true
        ? { verdict: 'control: the same code on both sides, its change is noise' }
        : verdict(cpuChange, cpuInterval)),
      perRound: pairs,
    }
  })
}

/**
 * Within ±5% CPU per request or not, on the paired median; `sure` when the
 * whole interval agrees (inside ±5%, or beyond it on the same side) and covers
 * at least 90% (five pairs or more).
 */
function verdict(change, interval) {
  if (change === undefined) return { within: undefined, sure: false, verdict: 'no pair measured' }
  const pct = percent(change)
  const inside = Math.abs(change) <= CPU_TOLERANCE
  const agrees = inside
    ? interval.low >= -CPU_TOLERANCE && interval.high <= CPU_TOLERANCE
    : change > 0
      ? interval.low > CPU_TOLERANCE
      : interval.high < -CPU_TOLERANCE
  const enough = interval.coverage >= INTERVAL_LEVEL
  const sure = agrees && enough
  const noisy = !agrees
    ? `; interval ${percent(interval.low)} to ${percent(interval.high)} crosses ±5%, run more rounds`
    : !enough
      ? `; too few pairs to be sure (interval covers ${Math.round(interval.coverage * 100)}%), run 5 rounds or more`
      : ''
  const what = inside ? 'within ±5%' : change > 0 ? `**costs more**: ${pct}` : `cheaper: ${pct}`
  return { within: inside, sure, verdict: `${what}${noisy}` }
}

const percent = (x) => (x === undefined ? 'n/a' : `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)}%`)
const fmt = (x, digits) =>
  x === undefined || !Number.isFinite(x)
    ? 'n/a'
    : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** The comparison as a Markdown table, with how to read it. */
export function markdownBuilds(rows, baseline) {
  const coverage = rows.find((r) => r.cpuInterval !== undefined)?.cpuInterval.coverage
  const lines = [
    `Baseline \`${baseline.commit?.slice(0, 7) ?? baseline.dir}\` against the current build; paired by round ` +
      `(both builds back to back, the first alternating), medians over the pairs.`,
    '',
    '| Scenario | Pairs | req/s baseline | req/s current | req/s current ÷ baseline (interval) | CPU µs/req baseline | CPU µs/req current | CPU/req change (interval) | Verdict |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const r of rows) {
    const ratio =
      r.reqPerSecRatio === undefined
        ? 'n/a'
        : `${fmt(r.reqPerSecRatio, 3)}x (${fmt(r.reqPerSecInterval.low, 3)}–${fmt(r.reqPerSecInterval.high, 3)})`
    const change =
      r.cpuChange === undefined
        ? 'n/a'
        : `${percent(r.cpuChange)} (${percent(r.cpuInterval.low)} to ${percent(r.cpuInterval.high)})`
    lines.push(
      `| ${r.label}${r.control ? ' (control)' : ''} | ${r.pairs} | ${fmt(r.baseline.reqPerSec, 0)} | ${fmt(r.current.reqPerSec, 0)} | ${ratio} | ${fmt(r.baseline.cpuUsPerRequest, 1)} | ${fmt(r.current.cpuUsPerRequest, 1)} | ${change} | ${r.verdict} |`,
    )
  }
  const tested = rows.filter((r) => !r.control && r.cpuChange !== undefined)
  lines.push(
    '',
    `Change = current ÷ baseline − 1 of the same round. Interval: distribution-free for the median of the pairs` +
      (coverage === undefined ? '' : `, covering ${Math.round(coverage * 100)}%`) +
      ` (with 5 pairs it is their min–max; fewer pairs cover less). Controls load no Aegis: both sides run ` +
      `the same code, so their change is this run's noise floor.`,
  )
  const controls = rows.filter((r) => r.control && r.cpuChange !== undefined)
  if (controls.length > 0) {
    const floor = Math.max(...controls.map((r) => Math.abs(r.cpuChange)))
    lines.push('', `Noise floor: the controls' median CPU/req changes reach ±${(floor * 100).toFixed(1)}%.`)
  }
  if (tested.length > 0) {
    const label = (r) => `${r.label} (${percent(r.cpuChange)})`
    const worse = tested.filter((r) => r.within === false && r.cpuChange > 0)
    const sureWorse = worse.filter((r) => r.sure)
    const unsure = tested.filter((r) => !r.sure)
    lines.push(
      '',
      sureWorse.length > 0
        ? `CPU per request **more than 5% higher** on ${sureWorse.map(label).join(', ')}, the whole interval too.`
        : worse.length > 0
          ? `CPU per request more than 5% higher on the median of ${worse.map(label).join(', ')}, but not ` +
            `sure: the interval crosses ±5% or covers too little. Run more rounds before concluding.`
          : `CPU per request within ±5% or better on every Aegis scenario (${tested.length})` +
            (unsure.length === 0
              ? ', each interval inside it too.'
              : `; not sure on ${unsure.length}: ${unsure.map((r) => r.label).join(', ')} (run more rounds).`),
    )
  }
  return lines.join('\n')
}
