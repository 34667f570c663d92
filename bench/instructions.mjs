/**
 * Instructions per request (`pnpm bench:instructions`): a deterministic
 * cross-check of the CPU figures of `pnpm bench`. On a shared 2-core VM the
 * CPU time per request of the wrk runs moves by tens of microseconds from run
 * to run; instruction counts do not. Each variant's server runs under
 * valgrind's callgrind twice, serving N1 and then N2 requests (keep-alive, 4
 * connections, sequential per connection); (I2 − I1) / (N2 − N1) is the cost
 * of one request with start-up and shutdown cancelled out. With `--gateway`,
 * the gateway benchmark's Node proxies instead, each forwarding `GET /small`
 * (or, with `--body large`, the 100 KiB `GET /large`) to one backend (which
 * runs outside callgrind). With `--clock-rate R`, the anomaly engine runs on a virtual clock
 * that advances 1/R ms a request: its clock-driven work falls as it does at R requests a
 * millisecond, not at callgrind's pace (some 50 times slower than wrk's).
 */
import { spawn } from 'node:child_process'
import { Agent, get } from 'node:http'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from './lib/args.mjs'
import { startServer } from './lib/children.mjs'
import { gatewayVariants } from './gateway-proxies.mjs'
import { comparisons, selectVariants } from './variants.mjs'

const SERVER = fileURLToPath(new URL('instructions-server.mjs', import.meta.url))
const PROXIES = fileURLToPath(new URL('gateway-proxies.mjs', import.meta.url))
const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    only: { type: 'string' },
    small: { type: 'string', default: '200' },
    large: { type: 'string', default: '1200' },
    gateway: { type: 'boolean', default: false },
    // With --gateway: which answer of the backend the proxies forward (`small` JSON or `large`, 100 KiB).
    body: { type: 'string', default: 'small' },
    // V8 flags for the measured server, e.g. --single-threaded: no background
    // compiler or GC threads, so where optimisation lands does not depend on timing.
    'node-flags': { type: 'string', default: '' },
    // The anomaly engine on a virtual clock advancing 1/R ms a request (variants.mjs' virtualClock):
    // its clock-driven work at the density of R requests a millisecond, not callgrind's slow pace.
    'clock-rate': { type: 'string' },
  },
})
const selected = values.gateway ? gatewayVariants(values.only) : selectVariants(values.only)
/** With --gateway: the backend the proxies forward to, and the path asked of them. */
const backend = values.gateway ? await startServer(PROXIES, 'backend') : undefined
if (!['small', 'large'].includes(values.body)) throw new Error(`--body is small or large, not ${values.body}`)
const path = backend === undefined ? '/' : `/${values.body}`
const [small, large] = [Number(values.small), Number(values.large)]
const nodeFlags = values['node-flags'].split(' ').filter(Boolean)

/** Run one server under callgrind for `n` requests; resolve with the instructions it executed. */
function count(variant, n) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'valgrind',
      [
        '--tool=callgrind',
        '--callgrind-out-file=/dev/null',
        process.execPath,
        ...nodeFlags,
        SERVER,
        variant,
        String(n),
        ...(backend === undefined ? [] : [String(backend.port)]),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env:
          values['clock-rate'] === undefined
            ? process.env
            : { ...process.env, AEGIS_BENCH_CLOCK_RATE: values['clock-rate'] },
      },
    )
    const deadline = setTimeout(() => child.kill('SIGKILL'), 600_000)
    let stderr = ''
    let stdout = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.stdout.on('data', (d) => {
      stdout += d
      const m = /port (\d+)/.exec(stdout)
      if (m && !child.loading) {
        child.loading = true
        load(Number(m[1]), n).catch(reject)
      }
    })
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(deadline)
      const m = /Collected : (\d+)/.exec(stderr)
      if (code !== 0 || !m)
        reject(new Error(`${variant} (${n} requests) failed: exit ${code}\n${stderr.slice(-2000)}`))
      else resolve(Number(m[1]))
    })
  })
}

/** `n` GET `path` over 4 keep-alive connections, each request after the previous answer. */
async function load(port, n) {
  const agent = new Agent({ keepAlive: true, maxSockets: 4 })
  let sent = 0
  const worker = async () => {
    while (sent < n) {
      sent++
      await new Promise((resolve, reject) => {
        get({ host: '127.0.0.1', port, path, agent }, (res) => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
          res.resume()
          res.once('end', resolve)
        }).once('error', reject)
      })
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()])
  agent.destroy()
}

const width = Math.max(...selected.map((v) => v.name.length))
const results = []
for (const v of selected) {
  const a = await count(v.name, small)
  const b = await count(v.name, large)
  const perRequest = (b - a) / (large - small)
  results.push({ name: v.name, label: v.label, framework: v.framework, stack: v.stack, perRequest })
  console.log(
    `${v.name.padEnd(width)} ${Math.round(perRequest).toLocaleString('en-US').padStart(10)} instructions/request`,
  )
}

console.log('\n| Variant | instructions / request | added vs bare |\n| --- | ---: | ---: |')
for (const r of results) {
  const bare = results.find((x) => x.framework === r.framework && x.stack === 'bare')
  const added =
    r.stack === 'bare' || !bare
      ? '—'
      : `${r.perRequest > bare.perRequest ? '+' : ''}${Math.round(r.perRequest - bare.perRequest).toLocaleString('en-US')}`
  console.log(`| ${r.label} | ${Math.round(r.perRequest).toLocaleString('en-US')} | ${added} |`)
}

// The CPU comparisons of variants.mjs (what the rate limiters add), in instructions.
const measured = comparisons.filter(
  (c) => c.kind === 'cpu' && [c.variant, c.base].every((n) => results.some((r) => r.name === n)),
)
if (measured.length > 0) {
  console.log('\n| Comparison | Variant − base | instructions / request |\n| --- | --- | ---: |')
  for (const c of measured) {
    const [a, b] = [c.variant, c.base].map((n) => results.find((r) => r.name === n).perRequest)
    const d = Math.round(a - b)
    console.log(
      `| ${c.label} | \`${c.variant}\` − \`${c.base}\` | ${d > 0 ? '+' : ''}${d.toLocaleString('en-US')} |`,
    )
  }
}
await backend?.stop()
