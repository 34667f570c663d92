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
    const cpus = ok.map((r) => r.cpuUsPerRequest)
    const redisCpus = ok.map((r) => r.redisCpuUsPerRequest).filter((c) => c !== undefined)
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
      cpuUsPerRequest: median(cpus),
      cpuUsPerRequestMin: ok.length > 0 ? Math.min(...cpus) : undefined,
      cpuUsPerRequestMax: ok.length > 0 ? Math.max(...cpus) : undefined,
      // The Redis server's CPU per request, for the variants on Redis (not in the server's figure).
      ...(redisCpus.length > 0 && { redisCpuUsPerRequest: median(redisCpus) }),
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
/** A difference of CPU per request, signed, to the hundredth of a microsecond. */
export const signedUs = (value) => `${signed(value, 2)} µs`

export function markdownTable(rows) {
  const lines = [
    '| Variant | OK runs | req/s (median) | req/s (min–max) | vs bare | CPU µs/req | CPU µs/req (min–max) | CPU µs/req added vs bare | p99 latency ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${r.okRuns}/${r.runs} | ${fmt(r.reqPerSec, 0)} | ${fmt(r.reqPerSecMin, 0)}–${fmt(r.reqPerSecMax, 0)} | ${fmt(r.vsBare, 2, 'x')} | ${fmt(r.cpuUsPerRequest, 1)} | ${fmt(r.cpuUsPerRequestMin, 1)}–${fmt(r.cpuUsPerRequestMax, 1)} | ${r.stack === 'bare' ? '—' : signed(r.addedCpuUs, 1)} | ${fmt(r.p99Ms, 2)} |`,
    )
  }
  const onRedis = rows.filter((r) => r.redisCpuUsPerRequest !== undefined)
  if (onRedis.length > 0) {
    lines.push('', 'Redis server CPU per request (`INFO cpu`, median; not in the CPU µs/req above):', '')
    for (const r of onRedis) lines.push(`- ${r.label}: ${fmt(r.redisCpuUsPerRequest, 1)} µs`)
  }
  return lines.join('\n')
}

/** Each target that the measured variants allow to check, with its verdict. */
export function targetChecks(rows) {
  const checks = []
  for (const [framework, minVsBare] of Object.entries(TARGETS.minVsBare)) {
    // The targets are about `<framework>-aegis` and `<framework>-peers`, not the limiter variants.
    const aegis = rows.find((r) => r.name === `${framework}-aegis`)
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
    const peers = rows.find((r) => r.name === `${framework}-peers`)
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

/**
 * The comparisons whose two variants were both measured: per round where both
 * runs succeeded, the CPU µs/request difference (`cpu`) or the req/s ratio
 * (`rate`); then their median and range. `ofMedians` is the same figure taken
 * between the two variants' medians, as the main table would give it.
 */
export function compare(comparisons, runs) {
  const out = []
  for (const c of comparisons) {
    const mine = runs.filter((r) => r.ok && r.variant === c.variant)
    const base = runs.filter((r) => r.ok && r.variant === c.base)
    if (mine.length === 0 || base.length === 0) continue
    const figure =
      c.kind === 'cpu' ? (a, b) => a.cpuUsPerRequest - b.cpuUsPerRequest : (a, b) => a.reqPerSec / b.reqPerSec
    const perRound = []
    for (const a of mine) {
      const b = base.find((r) => r.round === a.round)
      if (b !== undefined) perRound.push({ round: a.round, value: figure(a, b) })
    }
    if (perRound.length === 0) continue
    const paired = perRound.map((p) => p.value)
    const med = (list, key) => median(list.map((r) => r[key]))
    out.push({
      ...c,
      rounds: paired.length,
      perRound,
      median: median(paired),
      min: Math.min(...paired),
      max: Math.max(...paired),
      ofMedians:
        c.kind === 'cpu'
          ? med(mine, 'cpuUsPerRequest') - med(base, 'cpuUsPerRequest')
          : med(mine, 'reqPerSec') / med(base, 'reqPerSec'),
    })
  }
  return out
}

const figureOf = (c, value) => (c.kind === 'cpu' ? `${signed(value, 1)} µs` : fmt(value, 2, 'x'))

export function markdownComparisons(rows) {
  const lines = [
    '| Comparison | Variant − base | Rounds | Median | Min–max | Of the medians |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
  ]
  for (const c of rows) {
    const how = c.kind === 'cpu' ? 'CPU µs/req' : 'req/s ratio'
    lines.push(
      `| ${c.label} | ${how}: \`${c.variant}\` vs \`${c.base}\` | ${c.rounds} | ${figureOf(c, c.median)} | ${figureOf(c, c.min)} to ${figureOf(c, c.max)} | ${figureOf(c, c.ofMedians)} |`,
    )
  }
  return lines.join('\n')
}

/**
 * The comparisons measured in one process (run.mjs' `--in-process`): what the variant adds,
 * its 95% interval, and its target judged on the median and on the whole interval.
 */
export function markdownInProcess(rows) {
  const lines = [
    '| Comparison | Variant − base | Pairs of phases | Median | Mean (95% interval) | Target | Met (median / whole interval) |',
    '| --- | --- | ---: | ---: | ---: | ---: | :---: |',
  ]
  for (const c of rows) {
    const what = `\`${c.variant}\` vs \`${c.base}\``
    if (c.result === undefined) {
      lines.push(`| ${c.label} | ${what} | — | failed | — | — | — |`)
      continue
    }
    const { median: mid, mean, ci95 } = c.result.added
    const met =
      c.atMost === undefined
        ? '—'
        : `${mid <= c.atMost ? 'yes' : '**no**'} / ${ci95[1] <= c.atMost ? 'yes' : '**no**'}`
    lines.push(
      `| ${c.label} | ${what} | ${c.result.pairs} | ${signedUs(mid)} | ${signedUs(mean)} (${signedUs(ci95[0])} to ${signedUs(ci95[1])}) | ${c.atMost === undefined ? '—' : `≤ ${c.atMost} µs`} | ${met} |`,
    )
  }
  return lines.join('\n')
}

/**
 * The claims whose comparisons were measured, judged on the paired medians;
 * `roundsHeld` counts the rounds in which the claim held on its own.
 */
export function checkClaims(claims, compared) {
  const byId = new Map(compared.map((c) => [c.id, c]))
  const out = []
  for (const claim of claims) {
    const c = byId.get(claim.id)
    if (c === undefined) continue
    if ('report' in claim) {
      out.push({
        claim: claim.claim,
        measured: `${figureOf(c, c.median)} (${figureOf(c, c.min)} to ${figureOf(c, c.max)})`,
      })
      continue
    }
    if ('atLeast' in claim) {
      out.push({
        claim: claim.claim,
        measured: `${figureOf(c, c.median)} (${figureOf(c, c.min)} to ${figureOf(c, c.max)})`,
        met: c.median >= claim.atLeast,
        roundsHeld: `${c.perRound.filter((p) => p.value >= claim.atLeast).length}/${c.rounds}`,
      })
      continue
    }
    const other = byId.get(claim.than)
    if (other === undefined) continue
    // Per round: this comparison's figure against the other's in the same round.
    let rounds = 0
    let held = 0
    for (const p of c.perRound) {
      const q = other.perRound.find((o) => o.round === p.round)
      if (q === undefined) continue
      rounds++
      if (p.value < q.value) held++
    }
    out.push({
      claim: claim.claim,
      measured: `${figureOf(c, c.median)} vs ${figureOf(other, other.median)}`,
      met: c.median < other.median,
      roundsHeld: `${held}/${rounds}`,
    })
  }
  return out
}

export function markdownClaims(rows) {
  const lines = [
    '| Claim | Measured (paired medians) | Rounds it held | Met |',
    '| --- | ---: | ---: | :---: |',
  ]
  for (const r of rows) {
    const met = r.met === undefined ? '—' : r.met ? 'yes' : '**no**'
    lines.push(`| ${r.claim} | ${r.measured} | ${r.roundsHeld ?? '—'} | ${met} |`)
  }
  return lines.join('\n')
}
