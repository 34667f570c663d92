/**
 * From individual runs to the report: medians per variant, ratios against the
 * bare framework, and the targets docs/performance.md holds Aegis to.
 */

/** Aegis with default options, against the bare framework on the same machine. */
const TARGETS = {
  maxAddedCpuUs: 5,
  minVsBare: { express: 0.9, fastify: 0.7, koa: 0.8 },
}

/** The median, robust to the odd run disturbed by something else on the machine. */
export function median(values) {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/**
 * One row per variant, over its successful runs only. `vsBare` and
 * `addedCpuUs` compare medians with the bare app of the same framework, when
 * it was measured.
 */
export function summarize(variants, runs) {
  const rows = variants.map((v) => {
    const mine = runs.filter((r) => r.variant === v.name)
    const ok = mine.filter((r) => r.ok)
    const rates = ok.map((r) => r.reqPerSec)
    return {
      name: v.name,
      framework: v.framework,
      stack: v.stack,
      label: v.label,
      okRuns: ok.length,
      runs: mine.length,
      reqPerSec: median(rates),
      reqPerSecMin: ok.length > 0 ? Math.min(...rates) : undefined,
      reqPerSecMax: ok.length > 0 ? Math.max(...rates) : undefined,
      cpuUsPerRequest: median(ok.map((r) => r.cpuUsPerRequest)),
      p99Ms: median(ok.map((r) => r.latencyMs.p99).filter((p) => p !== undefined)),
    }
  })
  for (const row of rows) {
    const bare = rows.find((b) => b.framework === row.framework && b.stack === 'bare')
    const comparable = bare?.reqPerSec !== undefined && row.reqPerSec !== undefined
    row.vsBare = comparable ? row.reqPerSec / bare.reqPerSec : undefined
    row.addedCpuUs = comparable ? row.cpuUsPerRequest - bare.cpuUsPerRequest : undefined
  }
  return rows
}

const fmt = (value, digits, suffix = '') =>
  value === undefined
    ? 'n/a'
    : `${value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })}${suffix}`
const signed = (value, digits) =>
  value === undefined ? 'n/a' : `${value >= 0 ? '+' : ''}${fmt(value, digits)}`

export function markdownTable(rows) {
  const lines = [
    '| Variant | OK runs | req/s (median) | req/s (min–max) | vs bare | CPU µs/req | CPU µs/req added vs bare | p99 latency ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${r.okRuns}/${r.runs} | ${fmt(r.reqPerSec, 0)} | ${fmt(r.reqPerSecMin, 0)}–${fmt(r.reqPerSecMax, 0)} | ${fmt(r.vsBare, 2, 'x')} | ${fmt(r.cpuUsPerRequest, 1)} | ${r.stack === 'bare' ? '—' : signed(r.addedCpuUs, 1)} | ${fmt(r.p99Ms, 2)} |`,
    )
  }
  return lines.join('\n')
}

/** Each target that the measured variants allow to check, with its verdict. */
export function targetChecks(rows) {
  const checks = []
  for (const [framework, minVsBare] of Object.entries(TARGETS.minVsBare)) {
    const aegis = rows.find((r) => r.framework === framework && r.stack === 'aegis')
    if (aegis?.vsBare === undefined) continue
    checks.push({
      target: `${aegis.label} adds ≤ ${TARGETS.maxAddedCpuUs} µs of server CPU per request`,
      measured: `${signed(aegis.addedCpuUs, 1)} µs`,
      met: aegis.addedCpuUs <= TARGETS.maxAddedCpuUs,
    })
    checks.push({
      target: `${aegis.label} ≥ ${fmt(minVsBare, 2, 'x')} of bare req/s`,
      measured: fmt(aegis.vsBare, 2, 'x'),
      met: aegis.vsBare >= minVsBare,
    })
    const peers = rows.find((r) => r.framework === framework && r.stack === 'peers')
    if (peers?.vsBare === undefined) continue
    checks.push({
      target: `${aegis.label} beats ${peers.label} in req/s`,
      measured: `${fmt(aegis.vsBare, 2, 'x')} vs ${fmt(peers.vsBare, 2, 'x')}`,
      met: aegis.reqPerSec > peers.reqPerSec,
    })
  }
  return checks
}

export function markdownTargets(checks) {
  const lines = ['| Target | Measured | Met |', '| --- | ---: | :---: |']
  for (const c of checks) lines.push(`| ${c.target} | ${c.measured} | ${c.met ? 'yes' : '**no**'} |`)
  return lines.join('\n')
}
