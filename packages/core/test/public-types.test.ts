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

/** Compile a project with the workspace's TypeScript: its exit code and what it printed. */
function tsc(project: string): Promise<{ code: number; output: string }> {
  const bin = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '-p', project], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), output: stdout + stderr }),
    )
  })
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

  /**
   * The four packages' declarations installed in `project` with what they import, and a strict
   * tsconfig.json (made once, for each test that compiles a consumer there).
   */
  let installed = false
  const install = (): void => {
    if (installed) return
    installed = true
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
  }

  it('compile under tsc --strict (no skipLibCheck) in a project without ioredis', async () => {
    install()
    expect(existsSync(join(project, 'node_modules', 'ioredis'))).toBe(false)

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

    const result = await tsc(project)
    expect(result.output).toBe('')
    expect(result.code).toBe(0)
  }, 90_000)

  // Engines declare their events by declaration merging on AegisEvents from their own folder
  // (`declare module '../kernel/events.js'` in src/gateway/events.ts); bundled into one .d.ts, that
  // path must still name the bundle (scripts/dts-augmentations.mjs), or the merge is silently lost.
  it("carry the engines' events on AegisEvents, for ESM and CommonJS consumers, and take an app's own", async () => {
    install()
    const consumer = (self: string): string =>
      [
        `import { createAegis, type AegisEvents, type AuditEvent, type EventBus, type TypedEvent } from '@aegis/core'`,
        "declare module '@aegis/core' {",
        "  interface AegisEvents { 'app.deployed': { readonly version: string } }",
        '}',
        'const bus: EventBus = createAegis().events',
        "bus.on('upstream.breaker', (e) => {",
        "  const state: 'open' | 'half-open' | 'closed' = e.state",
        "  const origin: 'local' | 'peer' = e.origin",
        '  console.log(e.route, e.upstream, state, origin)',
        '})',
        "bus.on('upstream.health', (e) => console.log(e.healthy === true))",
        "bus.on('upstream.ejected', (e) => console.log(e.ms + 1))",
        "bus.on('proxy.chaos', (e) => console.log(e.chaos === false ? 'off' : e.chaos.abort?.status))",
        "bus.emit('app.deployed', { version: '1.2.3' })",
        '// @ts-expect-error: an event nobody declared',
        "bus.emit('upstream.vanished', {})",
        "// @ts-expect-error: an event's fields are its type's",
        "bus.emit('upstream.health', { route: '/api', upstream: 'http://10.0.0.1' })",
        "const audited: AuditEvent = { type: 'upstream.ejected', route: '/api', upstream: 'http://10.0.0.1', ms: 30_000 }",
        "const any: TypedEvent = { type: 'app.deployed', version: '1.2.3' }",
        "const health: AegisEvents['upstream.health'] = { route: '/api', upstream: 'http://10.0.0.1', healthy: true }",
        `export const ${self} = [audited, any, health]`,
        '',
      ].join('\n')
    writeFileSync(join(project, 'events.mts'), consumer('esm'))
    writeFileSync(join(project, 'events.cts'), consumer('cjs'))
    writeFileSync(
      join(project, 'tsconfig.events.json'),
      JSON.stringify({ extends: './tsconfig.json', files: ['events.mts', 'events.cts'] }),
    )
    const result = await tsc(join(project, 'tsconfig.events.json'))
    expect(result.output).toBe('')
    expect(result.code).toBe(0)
  }, 90_000)
})
