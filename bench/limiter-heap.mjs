/**
 * Heap of the memory rate limiter (`node --expose-gc bench/limiter-heap.mjs`):
 * one million distinct clients through `aegis.admit()`, and the heap after a
 * full GC every 100,000. The limiter keeps at most `maxKeys` buckets per
 * policy, least recently used first out, so the heap should grow by a fixed
 * number of bytes per key up to `maxKeys` and stay flat after. Each
 * configuration runs in a fresh process: limiter with `--max-keys` (default
 * 100,000), limiter with 1,000,000, and limiter off (what the rest of Aegis
 * holds for the same traffic). Method: bench/README.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from './lib/args.mjs'
import { buildPackages, checkBuilt, distFingerprint, environmentInfo, sourceState } from './lib/build.mjs'
import { spawnTracked } from './lib/children.mjs'
import { hasHeader, requestFrom } from './lib/admit.mjs'

const SELF = fileURLToPath(import.meta.url)
const RESULTS = fileURLToPath(new URL('results/', import.meta.url))

const USAGE = `Usage: node --expose-gc bench/limiter-heap.mjs [options]

  --max-keys M     the limiter's maxKeys for the main run (default 100000)
  --keys N         distinct clients pushed through admit() (default 1000000)
  --step S         heap sample every S clients (default 100000)
  --hot H          admits from 4,096 known clients afterwards, to time the common case
                   (default 400000; at most 401408, 98 each: the clock stands still, see below)
  --skip-build     use the packages' existing dist/ instead of building first
  -h, --help       this text`

// ---------------------------------------------------------------- child ----

/**
 * Client number i: even ones IPv4 (10.0.0.0 upwards), odd ones IPv6, each in
 * a /64 of its own (Aegis keys IPv6 clients by /64 by default) with an
 * interface id that varies too, so the key is really the /64 and not the address.
 */
function addressOf(i) {
  const k = i >>> 1
  if ((i & 1) === 0) return `${10 + (k >>> 24)}.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`
  return `2001:db8:${(k >>> 16).toString(16)}:${(k & 0xffff).toString(16)}:${(k % 251).toString(16)}::${(i % 7) + 1}`
}

/** The heap once everything unreachable is gone: two full collections. */
function settledMemory() {
  globalThis.gc()
  globalThis.gc()
  const m = process.memoryUsage()
  // lru-cache keeps its links in typed arrays: their bytes are outside heapUsed.
  return { heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, total: m.heapUsed + m.arrayBuffers }
}

async function child({ label, limiter, keys, step, hot }) {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc')
  const { createAegis, createClientResolver } = await import('@aegis/core')
  const limited = limiter !== false
  const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`)

  // Time stands still for the limiter: with 100 points a minute, one request
  // leaves a bucket that is full again 600 ms later, and a full bucket reads
  // the same as none. Frozen, every bucket keeps its request, so
  // `limiter.get()` tells a key held from a key evicted. The buckets are the
  // same objects either way; the admit() timings use hrtime.
  const frozen = performance.now()
  performance.now = () => frozen

  // The keys Aegis will give a few clients (its own resolver, default settings).
  const resolver = createClientResolver({ trustProxy: false, ipv6Subnet: 64 })
  const watched = [...new Set([0, 1, keys - 2, keys - 1])].filter((at) => at >= 0 && at < keys)
  const keysAt = Object.fromEntries(
    watched.map((at) => [at, resolver.resolve(requestFrom(addressOf(at))).key]),
  )
  if (new Set(Object.values(keysAt)).size !== watched.length)
    throw new Error('two watched clients share a key')

  const empty = settledMemory()
  const aegis = createAegis({ limiter })
  const before = settledMemory()
  send({ type: 'sample', label, keys: 0, ...before })

  /**
   * Admit one request per address, each on a fresh object (short-lived, as a
   * server's are); returns the ns it took. Every request must be admitted,
   * and limited exactly when the limiter is on.
   */
  function admitAll(addresses) {
    let wrong = 0
    const t0 = process.hrtime.bigint()
    for (let j = 0; j < addresses.length; j++) {
      const state = aegis.admit(requestFrom(addresses[j]))
      if (
        state instanceof Promise ||
        state.rejection !== undefined ||
        hasHeader(state, 'ratelimit') !== limited
      )
        wrong++
    }
    const ns = Number(process.hrtime.bigint() - t0)
    if (wrong > 0) {
      throw new Error(
        `${wrong} of ${addresses.length} requests were ${limited ? 'refused or not limited' : 'refused or limited'}`,
      )
    }
    return ns
  }

  const samples = []
  for (let from = 0; from < keys; from += step) {
    const n = Math.min(step, keys - from)
    const ns = admitAll(Array.from({ length: n }, (_, j) => addressOf(from + j)))
    const memory = settledMemory()
    const sample = { keys: from + n, usPerAdmit: ns / n / 1e3, ...memory }
    samples.push(sample)
    send({ type: 'sample', label, ...sample })
  }

  // Which keys the limiter still holds: the oldest should be gone once more than maxKeys came.
  let held
  if (limited) {
    held = {}
    for (const [at, key] of Object.entries(keysAt)) held[at] = (await aegis.limiter.get(key)) !== undefined
  }

  // The common case: clients seen before (their bucket is found, not created). 4,096 of them
  // in turn, all held by the limiter and by the identity cache (10,000 entries); each gets
  // at most 99 requests, under its 100 points with the clock frozen.
  const known = Array.from({ length: 4096 }, (_, j) => `172.16.${j >>> 8}.${j & 255}`)
  admitAll(known) // their first request creates their buckets
  const hotNs = admitAll(Array.from({ length: hot }, (_, j) => known[j & 4095]))

  await aegis.close()
  send({
    type: 'result',
    label,
    limiter,
    empty,
    before,
    samples,
    held,
    hotUsPerAdmit: hotNs / hot / 1e3,
  })
}

// --------------------------------------------------------------- parent ----

const int = (values, name, min) => {
  const n = Number(values[name])
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}`)
  return n
}

function parseOptions(argv) {
  const { values } = parseArgs({
    args: scriptArgs(argv),
    options: {
      'max-keys': { type: 'string', default: '100000' },
      keys: { type: 'string', default: '1000000' },
      step: { type: 'string', default: '100000' },
      hot: { type: 'string', default: '400000' },
      'skip-build': { type: 'boolean', default: false },
      child: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (int(values, 'hot', 1) > 4096 * 98) throw new Error('--hot must be at most 401408 (4,096 clients × 98)')
  return {
    help: values.help,
    child: values.child,
    maxKeys: int(values, 'max-keys', 1),
    keys: int(values, 'keys', 1),
    step: int(values, 'step', 1),
    hot: int(values, 'hot', 1),
    build: !values['skip-build'],
  }
}

/** One configuration in a fresh process, with a heap large enough for a million buckets. */
function runChild(config) {
  return new Promise((resolve, reject) => {
    const proc = spawnTracked(
      process.execPath,
      ['--expose-gc', '--max-old-space-size=2048', SELF, '--child', JSON.stringify(config)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let result
    let stderr = ''
    let pending = ''
    proc.stdout.setEncoding('utf8').on('data', (chunk) => {
      pending += chunk
      let nl
      while ((nl = pending.indexOf('\n')) >= 0) {
        const message = JSON.parse(pending.slice(0, nl))
        pending = pending.slice(nl + 1)
        if (message.type === 'result') result = message
        else
          console.log(
            `  ${config.label}: ${message.keys.toLocaleString('en-US').padStart(9)} keys  ` +
              `heap ${mb(message.heapUsed).padStart(7)} MB  + arrays ${mb(message.arrayBuffers).padStart(6)} MB` +
              (message.usPerAdmit === undefined ? '' : `  ${message.usPerAdmit.toFixed(2)} µs/admit`),
          )
      }
    })
    proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    proc.once('error', reject)
    proc.once('close', (code, signal) => {
      if (code === 0 && result !== undefined) resolve(result)
      else reject(new Error(`${config.label}: exited (${signal ?? `code ${code}`})\n${stderr}`))
    })
  })
}

const yes = (held) => (held === undefined ? 'n/a' : held ? 'yes' : 'no')
const mb = (bytes) => (bytes / 2 ** 20).toFixed(1)
const fmt = (n, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })

function markdown(results, off) {
  const cols = results.map((r) => r.label)
  const blank = cols.map(() => '').join(' | ')
  const lines = [
    `| Clients | ${cols.map((c) => `${c}: heap MB`).join(' | ')} | ${cols.map((c) => `${c}: µs/admit`).join(' | ')} |`,
    `| ---: | ${cols.map(() => '---:').join(' | ')} | ${cols.map(() => '---:').join(' | ')} |`,
    `| before | ${results.map((r) => mb(r.before.total)).join(' | ')} | ${blank} |`,
  ]
  for (let i = 0; i < results[0].samples.length; i++) {
    const row = results.map((r) => r.samples[i])
    lines.push(
      `| ${fmt(row[0].keys)} | ${row.map((s) => mb(s.total)).join(' | ')} | ${row.map((s) => s.usPerAdmit.toFixed(2)).join(' | ')} |`,
    )
  }
  lines.push(
    `| 4,096 known clients | ${blank} | ${results.map((r) => r.hotUsPerAdmit.toFixed(2)).join(' | ')} |`,
  )

  // All in: what the limiter instance holds at the end (its LRU's preallocated
  // arrays and the buckets) beyond what Aegis without a limiter holds.
  lines.push(
    '',
    '| Limiter | keys held | first / last client still held | at creation (vs off) | grown while filling | bytes per key, all in | bytes per key, buckets only |',
    '| --- | ---: | :---: | ---: | ---: | ---: | ---: |',
  )
  for (const r of results.filter((x) => x.limiter !== false)) {
    const last = r.samples.at(-1)
    const keysHeld = Math.min(last.keys, r.limiter.maxKeys)
    const grown = last.total - r.before.total - (off.samples.at(-1).total - off.before.total)
    const allIn = last.total - off.samples.at(-1).total
    lines.push(
      `| ${r.label} | ${fmt(keysHeld)} | ${yes(r.held[0])} / ${yes(r.held[last.keys - 1])} | ${mb(r.before.total - off.before.total)} MB | ${mb(grown)} MB | ${fmt(allIn / keysHeld)} | ${fmt(grown / keysHeld)} |`,
    )
  }
  return lines.join('\n')
}

async function main(options) {
  const source = await sourceState()
  if (options.build) await buildPackages()
  checkBuilt()
  const dist = distFingerprint()
  const startedAt = new Date()
  const { keys, step, hot, maxKeys } = options
  const policy = { points: 100, duration: 60 }
  const configs = [
    { label: `maxKeys ${fmt(maxKeys)}`, limiter: { ...policy, maxKeys } },
    ...(maxKeys === 1_000_000
      ? []
      : [{ label: 'maxKeys 1,000,000', limiter: { ...policy, maxKeys: 1_000_000 } }]),
    { label: 'limiter off', limiter: false },
  ]
  console.log(
    `${fmt(keys)} distinct clients (half IPv4, half IPv6 /64s) through admit(), ${policy.points} per ` +
      `${policy.duration} s each; heap after a full GC every ${fmt(step)}. Node ${process.version}.`,
  )
  const results = []
  for (const config of configs) results.push(await runChild({ ...config, keys, step, hot }))

  // The oldest clients must be gone once more than maxKeys came, the newest held.
  const problems = []
  for (const r of results.filter((x) => x.held !== undefined)) {
    for (const [at, isHeld] of Object.entries(r.held)) {
      const shouldHold = Number(at) >= keys - r.limiter.maxKeys
      if (isHeld !== shouldHold) problems.push(`${r.label}: client #${at} ${isHeld ? 'held' : 'gone'}`)
    }
  }

  const table = markdown(
    results,
    results.find((r) => r.limiter === false),
  )
  if (distFingerprint() !== dist)
    problems.push('packages/*/dist changed during the run: somebody rebuilt them')
  mkdirSync(RESULTS, { recursive: true })
  const file = `${RESULTS}limiter-heap-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`
  const record = {
    date: startedAt.toISOString(),
    command: ['node --expose-gc bench/limiter-heap.mjs', ...process.argv.slice(2)].join(' '),
    options: { keys, step, hot, maxKeys, policy },
    environment: environmentInfo(),
    source,
    dist,
    problems,
    results,
  }
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`)
  console.log(`\n## Heap after a full GC (heapUsed + ArrayBuffers)\n\n${table}`)
  for (const p of problems) console.log(`\nPROBLEM: ${p}`)
  console.log(`\nResults: ${file}`)
  if (problems.length > 0) process.exitCode = 1
}

let options
try {
  options = parseOptions(process.argv.slice(2))
} catch (err) {
  console.error(`limiter-heap: ${err.message}\n\n${USAGE}`)
  process.exit(2)
}
if (options.help) console.log(USAGE)
else if (options.child !== undefined) await child(JSON.parse(options.child))
else {
  try {
    await main(options)
  } catch (err) {
    console.error(`limiter-heap: ${err.message}`)
    process.exitCode = 1
  }
}
