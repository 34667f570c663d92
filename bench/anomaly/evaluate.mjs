/**
 * The anomaly engine's evaluation (`pnpm bench:anomaly`): the simulator's
 * traffic (traffic.mjs) replayed over real sockets through each adapter's app
 * (app.mjs), and a report of who was flagged and blocked, and when.
 *
 * The replay is in time order on a virtual clock: before each request the
 * clock handed to the engine (`anomaly.clock`) is set to the request's virtual
 * time, so twenty minutes of traffic take seconds and the engine sees the
 * think times, periods and bursts as generated. Requests with the same virtual
 * time go out together (at most `--window`); otherwise one at a time, each
 * answer read whole before the next request leaves. Every request names its
 * client in X-Forwarded-For (trusted from loopback).
 *
 * Per answer: the status; whether it was an anomaly block (403,
 * `application/problem+json`, type `…#abnormal-usage-detected`); the engine's
 * debug header `X-Aegis-Anomaly` (`score=…; threshold=…; reasons="…"`): a
 * client is flagged once an answer's score reaches the threshold the header
 * states, or an `anomaly.flagged` / `anomaly.blocked` event names it. Engine
 * events (`anomaly.*`) are collected from the instance's bus with the virtual
 * time they fired at. A blocked attacker keeps sending: the report says how
 * much of the rest was blocked too.
 *
 * The server runs in this process (the clock is a variable both sides see);
 * client and server share one event loop, which costs speed, not accuracy:
 * nothing here is timed in real time.
 *
 * Options: `--adapter express|fastify|koa|node|all` (default all, in turn),
 * `--seed N` (1), `--minutes M` (20), `--scale S` (1: ~82,000 requests; 0.1 for
 * a quick look), `--json` (the results as JSON on stdout instead of Markdown),
 * `--anomaly auto|on|off` (auto: on when this build has the option),
 * `--anomaly-options '{…}'` (more fields for the anomaly section),
 * `--limiter` (keep Aegis' rate limiter on its defaults; off by default so the
 * anomaly engine is measured alone), `--window N` (16), `--max-seconds S` (300:
 * each adapter's replay stops there, reported as partial).
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { scriptArgs } from '../lib/args.mjs'
import { ADAPTERS, startApp } from './app.mjs'
import { HOST } from './identities.mjs'
import {
  ABNORMAL_USAGE,
  adapterMarkdown,
  checkTargets,
  createTally,
  eventAddress,
  parseAnomalyHeader,
  summarizeAdapter,
} from './report.mjs'
import { generateTraffic, summarize } from './traffic.mjs'

/** How long one request may take before it counts as failed (status 0). */
const REQUEST_TIMEOUT_MS = 10_000

/**
 * Send one request and read its answer whole: the status, whether it is an
 * anomaly block, the debug header. Never rejects: a failure is status 0.
 */
export async function send(pool, q) {
  const headers = { host: HOST, 'x-forwarded-for': q.ip, ...q.headers }
  try {
    const res = await pool.request({
      method: q.method,
      path: q.path,
      headers,
      body: q.body,
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
    })
    const type = res.headers['content-type'] ?? ''
    const header = parseAnomalyHeader(res.headers['x-aegis-anomaly'])
    if (res.statusCode !== 403 || !String(type).startsWith('application/problem+json')) {
      await res.body.dump()
      return { status: res.statusCode, blocked: false, header }
    }
    let blocked = false
    try {
      blocked = (await res.body.json())?.type === ABNORMAL_USAGE
    } catch {
      // Not JSON after all: a 403 of something else.
    }
    return { status: res.statusCode, blocked, header }
  } catch {
    return { status: 0, blocked: false, header: undefined }
  }
}

/**
 * Replay `traffic` through one adapter's app; returns the summary, the targets
 * checked, the engine's status and the wall time.
 *
 * @example
 * const result = await evaluateAdapter('koa', generateTraffic({ scale: 0.1 }), {
 *   anomaly: 'auto', anomalyOptions: {}, limiter: false, window: 16, maxSeconds: 300, json: true,
 * })
 */
export async function evaluateAdapter(adapter, traffic, opts) {
  let now = 0
  const clock = () => now
  const app = await startApp(adapter, {
    clock,
    anomaly: opts.anomaly,
    limiter: opts.limiter,
    anomalyOptions: opts.anomalyOptions,
  })
  const tally = createTally(traffic.clients)
  // The requests in flight, so an event fired while one is served is pinned on its client.
  let inFlight = []
  const lastFromIp = new Map()
  const off = app.core.events.onAny((event) => {
    if (typeof event?.type !== 'string' || !event.type.startsWith('anomaly.')) return
    const ip = eventAddress(event)
    const q = inFlight.length === 1 && ip === undefined ? inFlight[0] : inFlight.find((r) => r.ip === ip)
    tally.event(event.type, now, q?.client ?? (ip === undefined ? undefined : lastFromIp.get(ip)), event)
  })
  const pool = new Pool(app.url, { connections: opts.window })
  const started = performance.now()
  const deadline = started + opts.maxSeconds * 1000
  const { requests } = traffic
  let partial = false
  let i = 0
  let nextProgress = started + 5000
  try {
    while (i < requests.length) {
      if (performance.now() > deadline) {
        partial = true
        break
      }
      const t = requests[i].t
      let j = i + 1
      while (j < requests.length && requests[j].t === t && j - i < opts.window) j++
      now = t
      inFlight = requests.slice(i, j)
      const answers = await Promise.all(inFlight.map((q) => send(pool, q)))
      for (let k = 0; k < inFlight.length; k++) {
        tally.answer(inFlight[k], answers[k])
        lastFromIp.set(inFlight[k].ip, inFlight[k].client)
      }
      inFlight = []
      i = j
      if (!opts.json && performance.now() > nextProgress) {
        nextProgress += 5000
        process.stderr.write(
          `  ${adapter}: ${i}/${requests.length} requests, virtual ${(t / 60_000).toFixed(1)} min\n`,
        )
      }
    }
  } finally {
    off()
    await pool.close()
    await app.close()
  }
  const wallSeconds = (performance.now() - started) / 1000
  const summary = summarizeAdapter(tally, traffic.campaigns)
  return {
    adapter,
    engine: app.anomaly,
    wallSeconds,
    replayed: i,
    partial,
    summary,
    targets: checkTargets(summary, { engine: app.anomaly.on }),
  }
}

/** A JSON-safe copy of a summary (the rows' helper functions left out). */
const plain = (value) => JSON.parse(JSON.stringify(value))

async function main() {
  const { values } = parseArgs({
    args: scriptArgs(),
    options: {
      adapter: { type: 'string', default: 'all' },
      seed: { type: 'string', default: '1' },
      minutes: { type: 'string', default: '20' },
      scale: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      anomaly: { type: 'string', default: 'auto' },
      'anomaly-options': { type: 'string', default: '{}' },
      limiter: { type: 'boolean', default: false },
      window: { type: 'string', default: '16' },
      'max-seconds': { type: 'string', default: '300' },
    },
  })
  const adapters = values.adapter === 'all' ? ADAPTERS : values.adapter.split(',')
  for (const a of adapters)
    if (!ADAPTERS.includes(a)) throw new Error(`--adapter: ${a} is not one of ${ADAPTERS.join(', ')}`)
  if (!['auto', 'on', 'off'].includes(values.anomaly)) throw new Error('--anomaly: auto, on or off')
  const opts = {
    anomaly: values.anomaly,
    anomalyOptions: JSON.parse(values['anomaly-options']),
    limiter: values.limiter,
    window: Math.max(1, Number(values.window)),
    maxSeconds: Number(values['max-seconds']),
    json: values.json,
  }
  const generating = performance.now()
  const traffic = generateTraffic({
    seed: Number(values.seed),
    minutes: Number(values.minutes),
    scale: Number(values.scale),
  })
  const generatedMs = performance.now() - generating
  const attackerRequests = traffic.requests.filter((q) => q.attacker).length
  const header = [
    `## Anomaly evaluation — seed ${traffic.seed}, ${traffic.minutes} virtual minutes, scale ${traffic.scale}`,
    '',
    `${traffic.requests.length} requests (${traffic.requests.length - attackerRequests} benign, ${attackerRequests} attacking) from ${traffic.clients.length} clients, generated in ${(generatedMs / 1000).toFixed(1)} s. Rate limiter ${opts.limiter ? 'on (defaults)' : 'off'}.`,
    '',
  ].join('\n')
  if (!opts.json) process.stdout.write(`${header}\n`)
  const results = []
  const startedAll = performance.now()
  for (const adapter of adapters) {
    if (!opts.json) process.stderr.write(`Replaying through ${adapter}…\n`)
    const result = await evaluateAdapter(adapter, traffic, opts)
    results.push(result)
    if (!opts.json)
      process.stdout.write(
        `${adapterMarkdown(adapter, result.summary, result.targets, { engine: result.engine, wallSeconds: result.wallSeconds, partial: result.partial })}\n`,
      )
  }
  const totalSeconds = (performance.now() - startedAll) / 1000
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify(
        {
          seed: traffic.seed,
          minutes: traffic.minutes,
          scale: traffic.scale,
          requests: traffic.requests.length,
          clients: traffic.clients.length,
          profiles: summarize(traffic),
          limiter: opts.limiter,
          results: plain(results),
          wallSeconds: totalSeconds,
        },
        null,
        2,
      )}\n`,
    )
  } else {
    const digests = new Set(results.map((r) => r.summary.answersDigest))
    const agree =
      results.length < 2
        ? ''
        : digests.size === 1
          ? ' Every adapter gave the same answers.'
          : ` The adapters' answers differ (${digests.size} distinct digests).`
    process.stdout.write(
      `All ${adapters.length} adapter(s) replayed in ${totalSeconds.toFixed(1)} s.${agree}\n`,
    )
  }
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url))
  await main().catch((err) => {
    process.stderr.write(`bench:anomaly: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
