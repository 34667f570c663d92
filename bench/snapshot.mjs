/**
 * A frozen copy of the code to measure (`node bench/snapshot.mjs <dir> [commit]`):
 * packages/ as committed at `commit` (default HEAD), built there, with this
 * checkout's bench/ and its installed dependencies (linked, not copied). A
 * benchmark run from `<dir>` then measures one build from start to end, even
 * while somebody edits and rebuilds packages/ in the checkout. Nothing in the
 * checkout is written.
 *
 *   node bench/snapshot.mjs /tmp/aegis-snap
 *   cd /tmp/aegis-snap && node bench/run.mjs --suite limiter --skip-build
 */
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { scriptArgs } from './lib/args.mjs'
import { ROOT } from './lib/build.mjs'
import { run } from './lib/children.mjs'

const [dir, commit = 'HEAD'] = scriptArgs()
if (dir === undefined) {
  console.error('usage: node bench/snapshot.mjs <dir> [commit]')
  process.exit(2)
}

const must = async (command, args, cwd) => {
  const out = await run(command, args, { cwd, timeoutMs: 300_000 })
  if (out.code !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${out.stdout}${out.stderr}`)
  return out.stdout
}

const sha = (await must('git', ['rev-parse', commit], ROOT)).trim()
if (existsSync(dir)) rmSync(dir, { recursive: true })
mkdirSync(dir, { recursive: true })

// The committed sources and the root configuration tsup reads.
const archive = join(dir, '.source.tar')
await must(
  'git',
  ['archive', '--output', archive, sha, 'packages', 'package.json', 'tsconfig.json', 'tsconfig.base.json'],
  ROOT,
)
await must('tar', ['-xf', archive, '-C', dir], dir)
rmSync(archive)

// Dependencies: the checkout's, linked. The packages' and bench's own
// node_modules hold relative links (into ../../node_modules/.pnpm, or to a
// sibling package), which resolve inside the copy once its root links back.
symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
for (const pkg of readdirSync(join(dir, 'packages'))) {
  const modules = join(ROOT, 'packages', pkg, 'node_modules')
  if (existsSync(modules))
    cpSync(modules, join(dir, 'packages', pkg, 'node_modules'), { recursive: true, verbatimSymlinks: true })
}
// This checkout's bench/, as it is (it may hold uncommitted work), without results.
cpSync(join(ROOT, 'bench'), join(dir, 'bench'), {
  recursive: true,
  verbatimSymlinks: true,
  filter: (src) => !src.startsWith(join(ROOT, 'bench', 'results')),
})

const tsup = join(ROOT, 'node_modules', '.bin', 'tsup')
for (const pkg of ['core', 'express', 'fastify', 'koa']) {
  console.log(`building packages/${pkg}…`)
  await must(tsup, [], join(dir, 'packages', pkg))
}
// What the runners record as the source measured (lib/build.mjs).
writeFileSync(
  join(dir, 'SNAPSHOT.json'),
  `${JSON.stringify({ commit: sha, builtAt: new Date().toISOString() })}\n`,
)
console.log(
  `${dir}: packages/ at ${sha.slice(0, 7)}, built; run the benchmarks from there with --skip-build.`,
)
