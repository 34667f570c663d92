/**
 * From answers to a verdict: what each client got (flagged, blocked, when),
 * rolled up per profile, the distributed campaign's detection delay, and the
 * issue's targets checked against the measurement. Pure functions over what
 * evaluate.mjs recorded; no sockets here.
 */
import { createHash } from 'node:crypto'
import { PROFILES } from './traffic.mjs'

/** The problem type of an anomaly block (RFC 9457 problem details, the IANA registry's name). */
export const ABNORMAL_USAGE = 'https://iana.org/assignments/http-problem-types#abnormal-usage-detected'

// Compiled once: every answer's debug header goes through them.
const SCORE = /(?:^|[;,\s])score=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)/
const THRESHOLD = /(?:^|[;,\s])threshold=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)/
const REASONS = /(?:^|[;,\s])reasons="([^"]*)"/

/**
 * The engine's debug header (`X-Aegis-Anomaly: score=0.82; threshold=0.6; reasons="a,b"`),
 * read defensively: a field missing or malformed is `undefined`, never a throw.
 *
 * @example
 * parseAnomalyHeader('score=0.82; threshold=0.6; reasons="404-burst, tool-ua"')
 * // { score: 0.82, threshold: 0.6, reasons: ['404-burst', 'tool-ua'] }
 */
export function parseAnomalyHeader(value) {
  if (Array.isArray(value)) value = value.join(', ')
  if (typeof value !== 'string' || value === '') return undefined
  const number = (re) => {
    const x = Number(re.exec(value)?.[1])
    return Number.isFinite(x) ? x : undefined
  }
  const reasons = REASONS.exec(value)?.[1]
  return {
    score: number(SCORE),
    threshold: number(THRESHOLD),
    reasons:
      reasons === undefined
        ? []
        : reasons
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
  }
}

/** The address an engine event is about, wherever the engine put it. */
export function eventAddress(event) {
  const c = event?.client
  const candidates = [event?.ip, typeof c === 'object' && c !== null ? c.ip : c, event?.address, event?.key]
  return candidates.find((x) => typeof x === 'string')
}

/** Nearest-rank percentile of numbers (`undefined` for none). */
export function percentile(values, p) {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

/**
 * The per-client record of one adapter's replay. `answer()` takes each
 * request's outcome in replay order; `event()` an engine event attributed to a
 * client.
 *
 * @example
 * const tally = createTally(traffic.clients)
 * tally.answer(request, { status: 200, blocked: false, header: undefined })
 */
export function createTally(clients) {
  const byId = new Map()
  for (const c of clients)
    byId.set(c.id, {
      id: c.id,
      kind: c.kind,
      attacker: c.attacker,
      evasive: c.evasive,
      ip: c.ip,
      campaign: c.campaign,
      sent: 0,
      probes: 0,
      firstT: undefined,
      blocked: 0,
      firstBlock: undefined, // { request, probe, t }
      afterBlock: 0,
      afterBlockBlocked: 0,
      flagged: false,
      flaggedAt: undefined,
      maxScore: undefined,
      reasons: new Map(),
      statuses: new Map(),
      limited: 0,
      failed: 0,
    })
  const events = []
  // Every status in replay order, hashed: two adapters that answered alike have the same digest.
  const statuses = createHash('sha256')
  return {
    byId,
    events,
    digest: () => statuses.copy().digest('hex').slice(0, 16),
    answer(q, { status, blocked, header }) {
      statuses.update(blocked ? `${status}b,` : `${status},`)
      const c = byId.get(q.client)
      c.sent++
      if (q.probe === true) c.probes++
      c.firstT ??= q.t
      c.statuses.set(status, (c.statuses.get(status) ?? 0) + 1)
      if (status === 0) c.failed++
      if (status === 429) c.limited++
      if (c.firstBlock !== undefined) {
        c.afterBlock++
        if (blocked) c.afterBlockBlocked++
      }
      if (blocked) {
        c.blocked++
        c.firstBlock ??= { request: c.sent, probe: c.probes, t: q.t }
      }
      if (header !== undefined) {
        if (header.score !== undefined && !(header.score <= (c.maxScore ?? -Infinity)))
          c.maxScore = header.score
        const over =
          header.score !== undefined && header.threshold !== undefined && header.score >= header.threshold
        if (over || blocked) for (const r of header.reasons) c.reasons.set(r, (c.reasons.get(r) ?? 0) + 1)
        if (over && !c.flagged) {
          c.flagged = true
          c.flaggedAt = { request: c.sent, t: q.t }
        }
      }
      if (blocked && !c.flagged) {
        c.flagged = true
        c.flaggedAt = { request: c.sent, t: q.t }
      }
    },
    /** An engine event at virtual time `at`, about client `id` (`undefined`: nobody we know). */
    event(type, at, id, raw) {
      events.push({ type, at, client: id, event: raw })
      const c = id === undefined ? undefined : byId.get(id)
      if (c !== undefined && (type === 'anomaly.flagged' || type === 'anomaly.blocked') && !c.flagged) {
        c.flagged = true
        c.flaggedAt = { request: c.sent, t: at }
      }
    },
  }
}

const share = (n, d) => (d === 0 ? undefined : n / d)

/** One profile's figures over its clients. */
function profileRow(kind, clients) {
  const sent = clients.reduce((s, c) => s + c.sent, 0)
  const blockedReqs = clients.reduce((s, c) => s + c.blocked, 0)
  const blockedClients = clients.filter((c) => c.firstBlock !== undefined)
  const afterBlock = clients.reduce((s, c) => s + c.afterBlock, 0)
  const afterBlocked = clients.reduce((s, c) => s + c.afterBlockBlocked, 0)
  const statuses = {}
  for (const c of clients) for (const [s, n] of c.statuses) statuses[s] = (statuses[s] ?? 0) + n
  const reasons = new Map()
  for (const c of clients) for (const [r, n] of c.reasons) reasons.set(r, (reasons.get(r) ?? 0) + n)
  const toBlock = blockedClients.map((c) => c.firstBlock.request)
  const probesToBlock = blockedClients.map((c) => c.firstBlock.probe)
  const timeToBlock = blockedClients.map((c) => c.firstBlock.t - c.firstT)
  const profile = PROFILES[kind]
  return {
    kind,
    attacker: profile.attacker,
    evasive: profile.evasive === true,
    family: profile.family,
    clients: clients.length,
    requests: sent,
    flagged: share(clients.filter((c) => c.flagged).length, clients.length),
    blocked: share(blockedClients.length, clients.length),
    requestsBlocked: share(blockedReqs, sent),
    firstBlockRequest: { median: percentile(toBlock, 50), p90: percentile(toBlock, 90) },
    firstBlockProbe: { median: percentile(probesToBlock, 50), p90: percentile(probesToBlock, 90) },
    firstBlockMs: { median: percentile(timeToBlock, 50), p90: percentile(timeToBlock, 90) },
    blockedAfterFirst: share(afterBlocked, afterBlock),
    /** Clients blocked at or before their nth request, by n: the targets read this. */
    blockedWithin: (n, by = 'request') =>
      share(blockedClients.filter((c) => c.firstBlock[by] <= n).length, clients.length),
    statuses,
    limited: clients.reduce((s, c) => s + c.limited, 0),
    failed: clients.reduce((s, c) => s + c.failed, 0),
    topReasons: [...reasons]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 4)
      .map(([r, n]) => ({ reason: r, answers: n })),
  }
}

/**
 * One adapter's results: a row per profile, the benign totals, each campaign's
 * detection, and the events seen per type.
 */
export function summarizeAdapter(tally, campaigns) {
  const kinds = Object.keys(PROFILES)
  const all = [...tally.byId.values()]
  const rows = kinds
    .map((kind) =>
      profileRow(
        kind,
        all.filter((c) => c.kind === kind),
      ),
    )
    .filter((r) => r.clients > 0)
  const benign = all.filter((c) => !c.attacker)
  const benignSent = benign.reduce((s, c) => s + c.sent, 0)
  const eventCounts = {}
  for (const e of tally.events) eventCounts[e.type] = (eventCounts[e.type] ?? 0) + 1
  const campaignRows = campaigns.map((campaign) => {
    const members = all.filter((c) => c.campaign === campaign.id)
    const detected = tally.events.find(
      (e) => e.type === 'anomaly.campaign' && JSON.stringify(e.event ?? {}).includes(campaign.route),
    )
    return {
      id: campaign.id,
      route: `${campaign.method} ${campaign.route}`,
      addresses: members.length,
      attempts: members.reduce((s, c) => s + c.sent, 0),
      startMs: campaign.start,
      detectedMs: detected?.at,
      delayMs: detected === undefined ? undefined : detected.at - campaign.start,
      addressesBlocked: share(members.filter((c) => c.firstBlock !== undefined).length, members.length),
      attemptsBlocked: share(
        members.reduce((s, c) => s + c.blocked, 0),
        members.reduce((s, c) => s + c.sent, 0),
      ),
    }
  })
  return {
    rows,
    benign: {
      clients: benign.length,
      requests: benignSent,
      flagged: share(benign.filter((c) => c.flagged).length, benign.length),
      blocked: share(benign.filter((c) => c.firstBlock !== undefined).length, benign.length),
      requestsBlocked: share(
        benign.reduce((s, c) => s + c.blocked, 0),
        benignSent,
      ),
    },
    campaigns: campaignRows,
    events: eventCounts,
    answersDigest: tally.digest(),
  }
}

/**
 * The issue's targets (docs/anomaly.md carries the table), checked against
 * one adapter's summary. `met` is null (JSON keeps it) where the figure is missing, and
 * everywhere when the engine was off (`engine: false`).
 */
export function checkTargets(summary, { engine = true } = {}) {
  const row = (kind) => summary.rows.find((r) => r.kind === kind)
  const combined = (kinds, pick) => {
    const rows = kinds.map(row).filter(Boolean)
    const clients = rows.reduce((s, r) => s + r.clients, 0)
    return clients === 0 ? undefined : rows.reduce((s, r) => s + pick(r) * r.clients, 0) / clients
  }
  const at = (kind) =>
    row(kind) ?? { blocked: undefined, firstBlockRequest: {}, blockedWithin: () => undefined }
  // Without the engine nothing is measured against the targets: every figure is shown, none is judged.
  const check = (name, value, ok, shown) => ({
    target: name,
    measured: shown,
    met: value === undefined || !engine ? null : ok,
  })
  const pct = (x) => (x === undefined ? '—' : `${(100 * x).toFixed(x < 0.01 && x > 0 ? 2 : 1)}%`)
  const b = summary.benign
  const scan = at('scanner')
  const flood = at('flood')
  const stuffing = combined(['stuffing', 'brute-force'], (r) => r.blockedWithin(10, 'probe') ?? 0)
  const scrapers = at('scraper').blockedWithin(100)
  const campaign = summary.campaigns[0]
  return [
    check('benign clients ever blocked ≤ 1%', b.blocked, b.blocked <= 0.01, pct(b.blocked)),
    check('benign clients flagged ≤ 5%', b.flagged, b.flagged <= 0.05, pct(b.flagged)),
    check(
      'benign requests blocked ≤ 0.1%',
      b.requestsBlocked,
      b.requestsBlocked <= 0.001,
      pct(b.requestsBlocked),
    ),
    check(
      'naive path scanners ≥ 99% blocked, median within 20 requests',
      scan.blocked,
      scan.blocked >= 0.99 && scan.firstBlockRequest.median <= 20,
      `${pct(scan.blocked)}, median ${scan.firstBlockRequest.median ?? '—'}`,
    ),
    check(
      'single-source floods ≥ 99% blocked, median within 50 requests',
      flood.blocked,
      flood.blocked >= 0.99 && flood.firstBlockRequest.median <= 50,
      `${pct(flood.blocked)}, median ${flood.firstBlockRequest.median ?? '—'}`,
    ),
    check(
      'single-address stuffing and brute force ≥ 95% within 10 attempts',
      stuffing,
      stuffing >= 0.95,
      pct(stuffing),
    ),
    check('aggressive scrapers ≥ 90% within 100 requests', scrapers, scrapers >= 0.9, pct(scrapers)),
    check(
      'distributed stuffing detected as a campaign within 5 minutes',
      campaign?.delayMs ?? (campaign === undefined ? undefined : Infinity),
      campaign?.delayMs !== undefined && campaign.delayMs <= 5 * 60_000,
      campaign === undefined
        ? '—'
        : campaign.delayMs === undefined
          ? 'not detected'
          : `${(campaign.delayMs / 1000).toFixed(0)} s`,
    ),
  ]
}

// ── Markdown ──────────────────────────────────────────────────────────────────

const pct = (x) =>
  x === undefined ? '—' : x === 0 ? '0' : `${(100 * x).toFixed(x < 0.001 ? 3 : x < 0.1 ? 2 : 1)}%`
const pair = ({ median, p90 }, unit = (v) => String(v)) =>
  median === undefined ? '—' : `${unit(median)} / ${unit(p90)}`
const seconds = (ms) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`

/** The answers a profile got, most frequent first: `200 91% · 404 6%`. */
function answers(statuses, total) {
  return Object.entries(statuses)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([s, n]) => `${s === '0' ? 'failed' : s} ${pct(n / total)}`)
    .join(' · ')
}

/**
 * One adapter's Markdown: the table per profile, the campaign, the targets.
 *
 * @example
 * process.stdout.write(adapterMarkdown('express', summary, targets, { engine, seconds: 12.3 }))
 */
export function adapterMarkdown(adapter, summary, targets, { engine, wallSeconds, partial }) {
  const lines = []
  lines.push(`### ${adapter}`, '')
  lines.push(
    `Anomaly engine: ${engine.note}. Replayed in ${wallSeconds.toFixed(1)} s${partial ? ' (stopped at the time limit: partial)' : ''}.`,
    '',
  )
  lines.push(
    "| profile | clients | requests | flagged | blocked | 1st block: request # (median / p90) | 1st block: attack step # | 1st block: virtual time after the client's 1st request | requests blocked | blocked after the 1st block | answers |",
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  )
  for (const r of summary.rows) {
    const name = `${r.kind}${r.evasive ? ' (evasive)' : ''}`
    lines.push(
      `| ${name} | ${r.clients} | ${r.requests} | ${pct(r.flagged)} | ${pct(r.blocked)} | ${pair(r.firstBlockRequest)} | ${r.attacker ? pair(r.firstBlockProbe) : '—'} | ${pair(r.firstBlockMs, seconds)} | ${pct(r.requestsBlocked)} | ${pct(r.blockedAfterFirst)} | ${answers(r.statuses, r.requests)} |`,
    )
  }
  const b = summary.benign
  lines.push(
    '',
    `Benign overall: ${b.clients} clients, ${b.requests} requests; flagged ${pct(b.flagged)}, blocked ${pct(b.blocked)}, requests blocked ${pct(b.requestsBlocked)}.`,
  )
  for (const c of summary.campaigns)
    lines.push(
      `Campaign ${c.id} (${c.route}, ${c.addresses} addresses, ${c.attempts} attempts, from ${seconds(c.startMs)}): ${
        c.delayMs === undefined
          ? 'no anomaly.campaign event naming its route'
          : `detected after ${seconds(c.delayMs)}`
      }; addresses blocked ${pct(c.addressesBlocked)}, attempts blocked ${pct(c.attemptsBlocked)}.`,
    )
  const events = Object.entries(summary.events)
  lines.push(
    `Engine events: ${events.length === 0 ? 'none' : events.map(([t, n]) => `${t} ${n}`).join(', ')}.`,
  )
  lines.push(`Digest of every answer's status, in replay order: ${summary.answersDigest}.`, '')
  lines.push('| target | measured | met |', '| --- | --- | :---: |')
  for (const t of targets)
    lines.push(`| ${t.target} | ${t.measured} | ${t.met === null ? '—' : t.met ? 'yes' : 'no'} |`)
  const reasons = summary.rows.filter((r) => r.topReasons.length > 0)
  if (reasons.length > 0) {
    lines.push('', 'Reasons the engine gave (flagged or blocked answers, top four per profile):', '')
    for (const r of reasons)
      lines.push(`- ${r.kind}: ${r.topReasons.map((x) => `${x.reason} (${x.answers})`).join(', ')}`)
  }
  lines.push('')
  return lines.join('\n')
}
