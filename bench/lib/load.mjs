/**
 * Load generators, each in its own process. Both return the same shape:
 *
 *   { requests, seconds, reqPerSec, latencyMs: { p50, p99 }, non2xx, errors }
 *
 * where `errors` counts socket-level failures (connect, read, write, timeout)
 * and `non2xx` the answers that were not 2xx/3xx. A run with either is failed
 * by the runner: a server that answers errors fast is not a fast server.
 */
import { get } from 'node:http'
import { createRequire } from 'node:module'
import { run } from './children.mjs'

// A generator that has not finished this long after its duration has hung.
const GRACE_MS = 15_000

const TIME_UNITS = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }
const seconds = (value, unit) => Number(value) * TIME_UNITS[unit]

/** Parse wrk's text report (wrk 4.x, run with --latency). */
function parseWrk(text) {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h),/.exec(text)
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(text)
  if (total === null || rate === null) throw new Error(`unreadable wrk output:\n${text}`)
  const percentile = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm').exec(text)
    return m === null ? undefined : seconds(m[1], m[2]) * 1e3
  }
  // wrk prints these two lines only when the counts are not zero.
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  return {
    requests: Number(total[1]),
    seconds: seconds(total[2], total[3]),
    reqPerSec: Number(rate[1]),
    latencyMs: { p50: percentile(50), p99: percentile(99) },
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
    errors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0),
  }
}

const wrk = {
  name: 'wrk',
  // One thread: on a 2-core machine wrk gets one core and the server the other.
  // `cpus`: run it on these CPUs only (taskset's list, `0`). `script`: a Lua file for
  // wrk's `-s` (one that builds each request: distinct URLs).
  async run({ url, duration, connections, cpus, script }) {
    const args = [
      '-t1',
      `-c${connections}`,
      `-d${duration}s`,
      '--latency',
      ...(script === undefined ? [] : ['-s', script]),
      url,
    ]
    const [command, argv] = cpus === undefined ? ['wrk', args] : ['taskset', ['-c', cpus, 'wrk', ...args]]
    const out = await run(command, argv, { timeoutMs: duration * 1e3 + GRACE_MS })
    if (out.code !== 0) throw new Error(`wrk failed (${out.signal ?? `code ${out.code}`}): ${out.stderr}`)
    return parseWrk(out.stdout)
  },
  async check() {
    try {
      await run('wrk', ['-v'], { timeoutMs: 5_000 }) // prints its version, exits 1
    } catch {
      throw new Error('wrk not found on PATH: install it (apt-get install wrk) or use --autocannon')
    }
  },
}

// autocannon's CLI, run by this Node in its own process: it must not share
// the runner's event loop (nor the server's CPU accounting).
const autocannonCli = createRequire(import.meta.url).resolve('autocannon/autocannon.js')

const autocannon = {
  name: 'autocannon',
  async run({ url, duration, connections }) {
    const args = [autocannonCli, '--json', '-c', String(connections), '-d', String(duration), url]
    const out = await run(process.execPath, args, { timeoutMs: duration * 1e3 + GRACE_MS })
    if (out.code !== 0) {
      throw new Error(`autocannon failed (${out.signal ?? `code ${out.code}`}): ${out.stderr}`)
    }
    const r = JSON.parse(out.stdout)
    return {
      requests: r.requests.total,
      seconds: r.duration,
      // Completed requests over elapsed time, as wrk computes its Requests/sec.
      reqPerSec: r.requests.total / r.duration,
      latencyMs: { p50: r.latency.p50, p99: r.latency.p99 },
      non2xx: r.non2xx,
      errors: r.errors + r.timeouts,
    }
  },
}

export const generators = { wrk, autocannon }

/** Why a load result does not count, if it does not. */
export function problemsOf(result) {
  const problems = []
  if (result.requests === 0) problems.push('no request completed')
  if (result.non2xx > 0) problems.push(`${result.non2xx} non-2xx responses`)
  if (result.errors > 0) problems.push(`${result.errors} socket errors`)
  return problems
}

/**
 * GET `url` on a connection of its own (5 s timeout): its status, header fields and whole
 * body — what a bench checks its servers answer before it measures them.
 *
 * @example
 * const { status, body } = await getWhole('http://127.0.0.1:8080/small')
 */
export function getWhole(url) {
  return new Promise((resolve, reject) => {
    get(url, { agent: false, timeout: 5_000 }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
      )
      res.on('error', reject)
    })
      .on('error', reject)
      .on('timeout', function () {
        this.destroy(new Error('timeout'))
      })
  })
}
