/**
 * What the benchmarks measure: the packages' dist/, built first unless told
 * otherwise, and the source state it came from. Shared by run.mjs and
 * limiter-heap.mjs.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cpus, loadavg, release } from 'node:os'
import { aegisEntry } from './aegis.mjs'
import { run } from './children.mjs'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const PACKAGES = ['core', 'express', 'fastify', 'koa']

export async function buildPackages() {
  console.log('Building packages/* (tsup)…')
  // The root "build" script, minus the shell: run by `sh`, its unquoted
  // ./packages/** glob expands to the package directories, which pnpm then
  // takes for the script name.
  const args = ['-r', '--filter', './packages/**', 'run', 'build']
  const out = await run('pnpm', args, { cwd: ROOT, timeoutMs: 300_000 })
  if (out.code !== 0) {
    throw new Error(`build failed (pnpm ${args.join(' ')}):\n${out.stdout}${out.stderr}`)
  }
}

/** `build`: another tree's root (an A/B run's baseline); default this checkout, through the workspace links. */
const entryOf = (pkg, build) => {
  try {
    return aegisEntry(pkg, build)
  } catch {
    return undefined
  }
}

/** The servers import the adapters' dist/ through the workspace links (or from `build`'s packages/). */
export function checkBuilt(build) {
  const missing = PACKAGES.filter((pkg) => {
    const entry = entryOf(pkg, build)
    return entry === undefined || !existsSync(entry)
  }).map((pkg) => `@aegis/${pkg}`)
  if (missing.length > 0) {
    throw new Error(
      build === undefined
        ? `${missing.join(', ')}: no dist/ to benchmark. Build them (run without --skip-build, ` +
            `or pnpm -r --filter './packages/**' run build) and try again.`
        : `${missing.join(', ')}: no dist/ under ${build}/packages (a baseline must be built: make it with bench/snapshot.mjs)`,
    )
  }
}

/**
 * A short hash of the packages' ESM entry points, taken before each run: if
 * somebody rebuilds packages/ while a benchmark runs, the runs no longer
 * measure the same code, and the report says so.
 */
export function distFingerprint(build) {
  const hash = createHash('sha256')
  for (const pkg of PACKAGES) {
    const entry = entryOf(pkg, build)
    try {
      hash.update(entry === undefined ? 'missing' : readFileSync(entry))
    } catch {
      hash.update('unreadable') // mid-rebuild: tsup empties dist/ first
    }
  }
  return hash.digest('hex').slice(0, 12)
}

/**
 * The source measured: commit and whether packages/ had uncommitted changes;
 * in a tree made by snapshot.mjs, the commit it exported. `root`: this
 * checkout, or an A/B run's baseline tree.
 */
export async function sourceState(root = ROOT) {
  const snapshot = join(root, 'SNAPSHOT.json')
  if (existsSync(snapshot))
    return { ...JSON.parse(readFileSync(snapshot, 'utf8')), uncommittedInPackages: [] }
  try {
    const head = await run('git', ['rev-parse', 'HEAD'], { cwd: root, timeoutMs: 10_000 })
    const status = await run('git', ['status', '--porcelain', '--', 'packages'], {
      cwd: root,
      timeoutMs: 10_000,
    })
    if (head.code !== 0 || status.code !== 0) return undefined // not a git checkout (an exported tree)
    return { commit: head.stdout.trim(), uncommittedInPackages: status.stdout.split('\n').filter(Boolean) }
  } catch {
    return undefined // not a git checkout: nothing to record
  }
}

/** The machine a run measured on, for its results file. */
export const environmentInfo = () => ({
  node: process.version,
  platform: `${process.platform} ${release()}`,
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model,
  loadavgAtStart: loadavg(),
})
