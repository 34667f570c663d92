/**
 * What each request allocates (`pnpm bench:allocations`): every variant's
 * server runs under wrk while V8's sampling heap profiler records each
 * allocation with the function that made it, including what the garbage
 * collector has already taken. Bytes per request are steady from run to run
 * (unlike CPU time on a shared VM) and show where a change adds work for the
 * collector, which on Express costs about 0.3 µs per KB. With `--gateway`,
 * the gateway benchmark's Node proxies instead (bench/gateway-proxies.mjs),
 * each forwarding small answers from one backend.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from './lib/args.mjs'
import { checkBuilt } from './lib/build.mjs'
import { startServer } from './lib/children.mjs'
import { generators, problemsOf } from './lib/load.mjs'
import { gatewayVariants, SMALL } from './gateway-proxies.mjs'
import { selectVariants } from './variants.mjs'

const SERVER = fileURLToPath(new URL('server.mjs', import.meta.url))
const PROXIES = fileURLToPath(new URL('gateway-proxies.mjs', import.meta.url))
const RESULTS = fileURLToPath(new URL('results/', import.meta.url))
const USAGE = `Usage: pnpm bench:allocations [options]
  --only a,b        variants (default: the headline suite; with --gateway, every Node proxy)
  --gateway         the gateway benchmark's Node proxies, forwarding GET /small to one backend
  --duration S      sampled seconds per variant (default 3), after 2 s of warm-up
  --top N           allocation sites listed per variant (default 8)`

const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    only: { type: 'string' },
    duration: { type: 'string', default: '3' },
    top: { type: 'string', default: '8' },
    gateway: { type: 'boolean', default: false },
    help: { type: 'boolean' },
  },
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const selected = values.gateway ? gatewayVariants(values.only) : selectVariants(values.only)
const duration = Number(values.duration)
const top = Number(values.top)
if (!(duration >= 1) || !(top >= 0)) {
  console.error(USAGE)
  process.exit(2)
}
checkBuilt()
const wrk = generators.wrk
await wrk.check()

/** The one backend every gateway proxy forwards to. */
const backend = values.gateway ? await startServer(PROXIES, 'backend') : undefined

/** One variant: warm up, then sample allocations over a measured window. */
async function sample(variant) {
  const server =
    backend === undefined
      ? await startServer(SERVER, variant.name)
      : await startServer(PROXIES, variant.name, String(backend.port))
  try {
    const url = `http://127.0.0.1:${server.port}${backend === undefined ? '/' : '/small'}`
    if (backend !== undefined) {
      // A proxy that answers something else would be measured doing something else.
      const body = await (await fetch(url)).text()
      if (body !== SMALL) throw new Error(`${variant.name}: GET /small answered ${body.slice(0, 80)}`)
    }
    await wrk.run({ url, duration: 2, connections: 50 })
    const started = await server.ask('heap-start', 'heap-started')
    if (started.error !== undefined) throw new Error(`${variant.name}: heap sampling: ${started.error}`)
    const load = await wrk.run({ url, duration, connections: 50 })
    const heap = await server.ask('heap-stop', 'heap')
    const problems = problemsOf(load)
    if (heap.error !== undefined) problems.push(heap.error)
    if (problems.length > 0) throw new Error(`${variant.name}: ${problems.join('; ')}`)
    const perRequest = (bytes) => bytes / load.requests
    return {
      name: variant.name,
      label: variant.label,
      framework: variant.framework,
      stack: variant.stack,
      requests: load.requests,
      bytesPerRequest: perRequest(heap.total),
      sites: heap.sites.slice(0, top).map(([site, bytes]) => ({ site, bytesPerRequest: perRequest(bytes) })),
    }
  } finally {
    await server.stop()
  }
}

const results = []
for (const variant of selected) {
  const result = await sample(variant)
  console.log(
    `${result.name.padEnd(16)} ${Math.round(result.bytesPerRequest).toLocaleString('en-US').padStart(7)} bytes/request`,
  )
  results.push(result)
}

const kb = (bytes) => (bytes / 1024).toFixed(1)
const bare = (r) => results.find((b) => b.framework === r.framework && b.stack === 'bare')
console.log('\n| Variant | KB allocated / request | added vs bare |\n| --- | ---: | ---: |')
for (const r of results) {
  const base = bare(r)
  const added = base === undefined || base === r ? '—' : `+${kb(r.bytesPerRequest - base.bytesPerRequest)}`
  console.log(`| ${r.label} | ${kb(r.bytesPerRequest)} | ${added} |`)
}
for (const r of results) {
  if (top === 0) break
  console.log(`\n${r.label}: where it allocates (bytes per request)`)
  for (const s of r.sites) console.log(`${String(Math.round(s.bytesPerRequest)).padStart(7)}  ${s.site}`)
}

await backend?.stop()
mkdirSync(RESULTS, { recursive: true })
const file = `${RESULTS}allocations-${new Date().toISOString().replace(/[:.]/g, '-')}.json`
writeFileSync(
  file,
  `${JSON.stringify({ command: process.argv.slice(2), gateway: values.gateway, duration, results }, null, 2)}\n`,
)
console.log(`\nResults: ${file}`)
