/**
 * One measured server: `node server.mjs <variant>`, spawned by run.mjs with an
 * IPC channel. It listens on 127.0.0.1 on a free port, reports the port, and
 * answers `cpu` messages with its own process.cpuUsage() and `probe` messages
 * with the variant's own probe, if any; `heap-start` and `heap-stop` bracket a
 * window of allocation sampling (bench/allocations.mjs). The runner asks only right before and
 * right after the measured window, so the sampling costs nothing while the
 * load runs and never goes through the HTTP stack measured.
 */
import { Session } from 'node:inspector/promises'
import { variants } from './variants.mjs'

const variant = variants.find((v) => v.name === process.argv[2])
if (variant === undefined || process.send === undefined) {
  throw new Error(`usage: run by bench/run.mjs as "server.mjs <variant>"; got ${process.argv[2]}`)
}

const server = await variant.start()

// V8's sampling heap profiler, for bench/allocations.mjs: every allocation
// counts (objects the garbage collector has already taken too), by the
// function that made it.
let heap
async function heapSampling(message) {
  if (message === 'heap-start') {
    heap?.disconnect()
    heap = new Session()
    heap.connect()
    await heap.post('HeapProfiler.startSampling', {
      samplingInterval: 256,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    })
    return { type: 'heap-started' }
  }
  if (heap === undefined) throw new Error('heap sampling was not started')
  const { profile } = await heap.post('HeapProfiler.stopSampling')
  heap.disconnect()
  heap = undefined
  return { type: 'heap', ...allocationSites(profile.head) }
}

const REPO_PACKAGES = new URL('../packages/', import.meta.url).href

/** Bytes by allocating function (`file:line`); a builtin is named after its caller. */
function allocationSites(head) {
  const sites = new Map()
  let total = 0
  const visit = (node, caller) => {
    const { functionName, url, lineNumber } = node.callFrame
    // Packages by name: `fastify/lib/route.js`, `@aegis/core/dist/index.js`.
    const where = url.replace(/^.*node_modules\//, '').replace(REPO_PACKAGES, '@aegis/')
    const name = `${functionName || '(anonymous)'} ${where}${url ? `:${lineNumber + 1}` : ''}`
    const site = url === '' && caller !== undefined ? `${caller} > ${name}` : name
    if (node.selfSize > 0) {
      sites.set(site, (sites.get(site) ?? 0) + node.selfSize)
      total += node.selfSize
    }
    for (const child of node.children) visit(child, name)
  }
  visit(head, undefined)
  return { total, sites: [...sites].sort((a, b) => b[1] - a[1]) }
}

process.on('message', (message) => {
  if (message === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage() })
  if (message === 'heap-start' || message === 'heap-stop') {
    heapSampling(message).then(process.send.bind(process), (err) =>
      process.send({ type: message === 'heap-start' ? 'heap-started' : 'heap', error: err.message }),
    )
  }
  if (message === 'probe') {
    // A probe that throws is a problem of the run, not a crash of the server.
    Promise.resolve()
      .then(() => variant.probe?.() ?? { problems: [] })
      .then(
        (result) => process.send({ type: 'probe', ...result }),
        (err) => process.send({ type: 'probe', problems: [`probe failed: ${err.message}`] }),
      )
  }
})
// The runner gone (crashed, killed) means nobody will stop us: leave with it.
process.on('disconnect', () => process.exit(0))

process.send({ type: 'ready', port: server.address().port })
