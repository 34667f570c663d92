/**
 * The published types, as a user's compiler meets them (issue 14, finding 15):
 * the built `.d.ts` of the four packages, copied into a throwaway project where
 * ioredis is not installed at all, compiled by `tsc --strict` with library
 * checking on. Aegis' public types must not make every user type-check ioredis
 * (whose declarations import untyped modules): Redis is optional.
 *
 * Needs the packages built (`pnpm test` builds first).
 */
import { execFile } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const PACKAGES = ['core', 'express', 'fastify', 'koa'] as const
const DECLARATIONS = ['index.d.ts', 'index.d.cts'] as const
const dist = (pkg: string, file: string): string => join(ROOT, 'packages', pkg, 'dist', file)

/** Bare module specifiers a declaration file imports (`node:` builtins and `@aegis/*` aside). */
function importsOf(text: string): string[] {
  const found = new Set<string>()
  for (const m of text.matchAll(
    /(?:from|import)\s*\(?\s*['"]([^'"]+)['"]|reference\s+types=['"]([^'"]+)['"]/g,
  )) {
    const spec = (m[1] ?? m[2]) as string
    if (spec.startsWith('node:') || spec.startsWith('.') || spec.startsWith('@aegis/')) continue
    const parts = spec.split('/')
    found.add(spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string))
  }
  return [...found]
}

describe('public types (built .d.ts)', () => {
  it('exist for the four packages: run pnpm build first', () => {
    for (const pkg of PACKAGES)
      for (const file of DECLARATIONS) expect(existsSync(dist(pkg, file)), dist(pkg, file)).toBe(true)
  })

  it('never reference ioredis', () => {
    for (const pkg of PACKAGES)
      for (const file of DECLARATIONS) {
        const text = readFileSync(dist(pkg, file), 'utf8')
        expect(importsOf(text), `${pkg}/dist/${file}`).not.toContain('ioredis')
        expect(text, `${pkg}/dist/${file}`).not.toMatch(/ioredis/)
      }
  })

  const project = mkdtempSync(join(tmpdir(), 'aegis-types-'))
  afterAll(() => rmSync(project, { recursive: true, force: true }))

  it('compile under tsc --strict (no skipLibCheck) in a project without ioredis', async () => {
    const modules = join(project, 'node_modules')
    const link = (name: string, target: string): void => {
      const at = join(modules, name)
      if (existsSync(at)) return
      mkdirSync(dirname(at), { recursive: true })
      symlinkSync(realpathSync(target), at, 'dir')
    }
    for (const pkg of PACKAGES) {
      const from = join(ROOT, 'packages', pkg)
      const to = join(modules, '@aegis', pkg)
      mkdirSync(join(to, 'dist'), { recursive: true })
      cpSync(join(from, 'package.json'), join(to, 'package.json'))
      for (const file of DECLARATIONS) cpSync(dist(pkg, file), join(to, 'dist', file))
      // What each declaration file imports, resolved where that package resolves it
      // (its @types too): exactly the dependencies a user has installed, ioredis never.
      const require = createRequire(join(from, 'package.json'))
      for (const spec of importsOf(readFileSync(dist(pkg, 'index.d.ts'), 'utf8'))) {
        for (const name of [spec, `@types/${spec.replace(/^@([^/]+)\//, '$1__')}`]) {
          try {
            link(name, dirname(require.resolve(`${name}/package.json`)))
          } catch {
            // no such package (a package without @types, or types bundled): fine
          }
        }
      }
    }
    link('@types/node', join(ROOT, 'node_modules', '@types', 'node'))
    expect(existsSync(join(modules, 'ioredis'))).toBe(false)

    writeFileSync(join(project, 'package.json'), JSON.stringify({ type: 'module', private: true }))
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          skipLibCheck: false,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          types: ['node'],
        },
        files: ['index.ts'],
      }),
    )
    writeFileSync(
      join(project, 'index.ts'),
      [
        "import { createAegis, type AegisOptions } from '@aegis/core'",
        "import { aegis as expressAegis, AegisConfigError, AegisError, ErrorCodes } from '@aegis/express'",
        "import { aegis as fastifyAegis, AegisConfigError as FastifyConfigError } from '@aegis/fastify'",
        "import { aegis as koaAegis, AegisError as KoaError } from '@aegis/koa'",
        "const options: AegisOptions = { store: { redis: 'redis://127.0.0.1:6379' } }",
        'const core = createAegis(options)',
        'const status: string | undefined = core.store?.client.status',
        'try { expressAegis({ limiter: { points: 0 } }) } catch (err) {',
        '  if (err instanceof AegisConfigError) console.log(err.issues, ErrorCodes.CONFIG)',
        '  if (err instanceof AegisError || err instanceof KoaError) console.log(err.code)',
        '}',
        'export { core, status, fastifyAegis, koaAegis, FastifyConfigError }',
        '',
      ].join('\n'),
    )

    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    const result = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(process.execPath, [tsc, '-p', project], { timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), output: stdout + stderr }),
      )
    })
    expect(result.output).toBe('')
    expect(result.code).toBe(0)
  }, 90_000)
})
