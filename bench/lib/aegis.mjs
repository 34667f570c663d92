/**
 * Where the measured servers import Aegis from. By default `@aegis/<name>`
 * through bench/'s workspace links: this checkout's packages/<name>/dist. In
 * the baseline processes of an A/B run (`--baseline` of run.mjs and
 * gateway.mjs) the environment variable AEGIS_BENCH_BUILD names another tree —
 * a directory made by snapshot.mjs, or any checkout with built packages/ — and
 * the adapter is imported from that tree's packages/<name>/dist. The adapter's
 * own `import '@aegis/core'` then resolves inside the same tree
 * (packages/<name>/node_modules/@aegis/core is pnpm's relative link to
 * ../../../core), so a baseline process runs the baseline's core, never this
 * checkout's. The same harness code (variants, checks) runs on both sides;
 * only the Aegis build differs.
 *
 * `node bench/lib/aegis.mjs` imports the three adapters the same way and
 * prints where each and its core came from (JSON): the runners' preflight.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** The variable that points a server process at another build. */
export const BUILD_ENV = 'AEGIS_BENCH_BUILD'

const ADAPTERS = ['express', 'fastify', 'koa']

/** The file `import` takes from a package.json's `exports` (`.` → import → default), or `module` / `main`. */
function esmEntry(packageDir) {
  const pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'))
  const pick = (target) =>
    typeof target === 'string' || target === undefined || target === null
      ? (target ?? undefined)
      : pick(target.import ?? target.default)
  const target = pick(pkg.exports?.['.'] ?? pkg.exports) ?? pkg.module ?? pkg.main ?? 'index.js'
  return realpathSync(join(packageDir, target))
}

/**
 * The real path of the ESM entry of `@aegis/<name>` in `build` (another
 * tree's root), or without one this checkout's, as `import('@aegis/<name>')`
 * finds it. Throws when it is missing.
 */
export function aegisEntry(name, build) {
  if (build === undefined) return realpathSync(fileURLToPath(import.meta.resolve(`@aegis/${name}`)))
  return esmEntry(join(build, 'packages', name))
}

const imported = new Set()

/** `import('@aegis/<name>')`, from the build this process was pointed at. */
export async function importAegis(name) {
  const build = process.env[BUILD_ENV]
  const module =
    build === undefined
      ? await import(`@aegis/${name}`)
      : await import(pathToFileURL(aegisEntry(name, build)).href)
  imported.add(name)
  return module
}

/** The package directory `name` resolves to from `file`: Node's node_modules walk, real path. */
function packageFrom(file, name) {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate)
    if (dirname(dir) === dir) return undefined
  }
}

/**
 * What this process imported through `importAegis`: per package its entry
 * file and, for an adapter, the `@aegis/core` entry that adapter resolves,
 * and whether it is the very module instance the adapter runs on (one of the
 * adapter's re-exports, `AegisError`, `ErrorCodes`, is the same object as
 * core's). Asked once a server listens, outside any measured window; the
 * modules are loaded by then, so the imports below are cache hits.
 *
 * @returns {Promise<Array<{ name: string, file: string, core?: string, sameInstance?: boolean }>>}
 */
export async function aegisImports() {
  const out = []
  for (const name of imported) {
    const file = aegisEntry(name, process.env[BUILD_ENV])
    if (name === 'core') {
      out.push({ name, file })
      continue
    }
    const coreDir = packageFrom(file, '@aegis/core')
    const core = coreDir === undefined ? undefined : esmEntry(coreDir)
    let sameInstance
    // The CLI re-exports nothing of core to compare: it runs on the core its own node_modules
    // link resolves, whose place in the build importProblems checks.
    if (name === 'cli') sameInstance = core !== undefined
    else if (core !== undefined) {
      const [adapter, coreModule] = await Promise.all([
        import(pathToFileURL(file).href),
        import(pathToFileURL(core).href),
      ])
      const shared = Object.keys(adapter).filter(
        (k) => typeof adapter[k] === 'object' || typeof adapter[k] === 'function',
      )
      sameInstance = shared.some((k) => adapter[k] !== null && coreModule[k] === adapter[k])
    }
    out.push({ name, file, core, sameInstance })
  }
  return out
}

// The preflight: `[AEGIS_BENCH_BUILD=<dir>] node bench/lib/aegis.mjs`.
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  for (const name of ADAPTERS) await importAegis(name)
  process.stdout.write(`${JSON.stringify(await aegisImports())}\n`)
}
