/**
 * Where a process' CPU time went, from a `node --cpu-prof` profile: self time by
 * function, and by place. Aegis' packages are bundled (one dist/index.js each),
 * so their functions are placed through the bundle's source map, back to the
 * source file and line (`core/src/ghost/engine.ts:187`).
 */
import { readFileSync } from 'node:fs'
import { SourceMap } from 'node:module'
import { fileURLToPath } from 'node:url'

const maps = new Map()

/** The source map beside a bundled file (`index.js.map`), or `null` without one. */
function mapOf(url) {
  if (!maps.has(url)) {
    let map = null
    try {
      map = new SourceMap(JSON.parse(readFileSync(`${fileURLToPath(url)}.map`, 'utf8')))
    } catch {
      // no map: the function keeps its bundle's place
    }
    maps.set(url, map)
  }
  return maps.get(url)
}

/** `core/src/ghost/engine.ts:187` for a frame in an Aegis bundle; the package file otherwise. */
function placeOf({ url, lineNumber, columnNumber }) {
  if (url === '') return ''
  const pkg = /\/packages\/([^/]+)\/dist\/[^/]+$/.exec(url)
  if (pkg !== null) {
    const entry = mapOf(url)?.findEntry(lineNumber, columnNumber)
    if (entry?.originalSource !== undefined) {
      const src = entry.originalSource.replace(/^.*?\/?src\//, 'src/')
      return `${pkg[1]}/${src}:${entry.originalLine + 1}`
    }
    return `${pkg[1]}/dist:${lineNumber + 1}`
  }
  return `${url.replace(/^.*node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?/, '').replace(/^file:\/\//, '')}:${lineNumber + 1}`
}

/** The place's group: Aegis' ghost, its gateway, the rest of Aegis, undici, Node, V8's own. */
function groupOf(name, where) {
  if (where.startsWith('core/src/ghost/')) return 'aegis ghost'
  if (where.startsWith('core/src/gateway/')) return 'aegis gateway'
  if (/^(core|express|fastify|koa)\//.test(where)) return 'aegis other'
  if (where.startsWith('undici/')) return 'undici'
  if (where.startsWith('node:')) return 'node (js)'
  if (name === '(garbage collector)') return 'gc'
  if (name === '(program)' || name === '(idle)') return name
  return 'native / other'
}

/** What `under` counts: the time spent in frames of `core/src/ghost/` and in everything they call. */
const UNDER = 'core/src/ghost/'

/**
 * Self time of a profile, `top` functions first; and the time spent under Aegis'
 * ghost code (its frames and all they call: Node's Buffer copies, lru-cache),
 * by the outermost ghost frame of each sample — what the ghost costs, bar the
 * garbage collection its allocations bring.
 *
 * @returns {{
 *   totalMs: number,
 *   top: { name: string, where: string, group: string, selfMs: number, share: number }[],
 *   groups: { group: string, selfMs: number, share: number }[],
 *   under: { ms: number, share: number, entries: { name: string, where: string, ms: number, share: number }[] },
 * }}
 */
export function summarizeProfile(file, top = 25) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parentOf = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id)
  // Per node: the outermost ghost frame on its stack (its key), or null.
  const outermost = new Map()
  const ghostFrameOf = (id) => {
    if (outermost.has(id)) return outermost.get(id)
    const parent = parentOf.get(id)
    const above = parent === undefined ? null : ghostFrameOf(parent)
    let found = above
    if (above === null) {
      const { callFrame } = byId.get(id)
      const where = placeOf(callFrame)
      if (where.startsWith(UNDER)) found = `${callFrame.functionName || '(anonymous)'} ${where}`
    }
    outermost.set(id, found)
    return found
  }
  // Each sample lasts until the next one: timeDeltas[i + 1] belongs to samples[i].
  const self = new Map()
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0
    const id = profile.samples[i]
    self.set(id, (self.get(id) ?? 0) + dt)
  }
  const functions = new Map()
  for (const [id, us] of self) {
    const { callFrame } = byId.get(id)
    const name = callFrame.functionName || '(anonymous)'
    const where = placeOf(callFrame)
    const key = `${name} ${where}`
    const f = functions.get(key) ?? { name, where, group: groupOf(name, where), selfUs: 0 }
    f.selfUs += us
    functions.set(key, f)
  }
  // Idle time is the process waiting: shares are of the time it worked.
  const busy = [...functions.values()].filter((f) => f.name !== '(idle)')
  const totalUs = busy.reduce((s, f) => s + f.selfUs, 0)
  const groups = new Map()
  for (const f of busy) groups.set(f.group, (groups.get(f.group) ?? 0) + f.selfUs)
  const entries = new Map()
  for (const [id, us] of self) {
    const frame = ghostFrameOf(id)
    if (frame !== null) entries.set(frame, (entries.get(frame) ?? 0) + us)
  }
  const underUs = [...entries.values()].reduce((s, us) => s + us, 0)
  return {
    totalMs: totalUs / 1e3,
    top: busy
      .sort((a, b) => b.selfUs - a.selfUs)
      .slice(0, top)
      .map((f) => ({
        name: f.name,
        where: f.where,
        group: f.group,
        selfMs: f.selfUs / 1e3,
        share: f.selfUs / totalUs,
      })),
    groups: [...groups]
      .sort((a, b) => b[1] - a[1])
      .map(([group, us]) => ({ group, selfMs: us / 1e3, share: us / totalUs })),
    under: {
      ms: underUs / 1e3,
      share: underUs / totalUs,
      entries: [...entries]
        .sort((a, b) => b[1] - a[1])
        .map(([key, us]) => {
          const [name, where] = key.split(' ')
          return { name, where, ms: us / 1e3, share: us / totalUs }
        }),
    },
  }
}
