/**
 * V8's sampling heap profiler inside a measured server process, for
 * bench/allocations.mjs: the runner sends `heap-start` and `heap-stop` over
 * the IPC channel around its measured window, never through the HTTP stack
 * measured.
 */
import { Session } from 'node:inspector/promises'

// Every allocation counts (objects the garbage collector has already taken
// too), by the function that made it.
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

const REPO_PACKAGES = new URL('../../packages/', import.meta.url).href

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

/** Answer the runner's `heap-start` / `heap-stop` messages (other messages are ignored). */
export function answerHeapSampling(message) {
  if (message !== 'heap-start' && message !== 'heap-stop') return
  heapSampling(message).then(process.send.bind(process), (err) =>
    process.send({ type: message === 'heap-start' ? 'heap-started' : 'heap', error: err.message }),
  )
}
