import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const OPTIONAL = ['undici', 'ioredis', 'opossum', 'rate-limiter-flexible']
const built = (file: string): string => fileURLToPath(new URL(`../dist/${file}`, import.meta.url))

/**
 * Which optional dependencies a fresh process has loaded once `setup` ran with
 * the built package (`build`: the ESM or the CommonJS file); the package's
 * own test suite runs after `pnpm build`.
 */
function loadedAfter(build: 'index.js' | 'index.cjs', setup: string): string[] {
  const script = `
    const { createRequire } = await import('node:module')
    const { createAegis } = ${build === 'index.js' ? 'await import' : 'createRequire(process.cwd() + "/")'}(${JSON.stringify(built(build))})
    ${setup}
    await aegis.close()
    const names = ${JSON.stringify(OPTIONAL)}
    // require() of a package caches its files under node_modules/<name>/, whichever build asked.
    const files = Object.keys(createRequire(process.cwd() + '/').cache)
    console.log(JSON.stringify(names.filter((n) => files.some((f) => f.includes('/node_modules/' + n + '/')))))
  `
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
  return JSON.parse(out.trim().split('\n').pop() as string) as string[]
}

describe('optional dependencies', () => {
  for (const build of ['index.js', 'index.cjs'] as const) {
    it(`a default aegis() loads none of them (${build})`, () => {
      expect(loadedAfter(build, 'const aegis = createAegis({})')).toEqual([])
    })

    it(`a proxy route loads undici and opossum, the fixed-window limiter rate-limiter-flexible (${build})`, () => {
      const loaded = loadedAfter(
        build,
        `const aegis = createAegis({
          limiter: { algorithm: 'fixed-window' },
          proxy: [{ prefix: '/api', upstreams: ['http://127.0.0.1:9'], healthCheck: false }],
        })`,
      )
      expect(loaded).toEqual(['undici', 'opossum', 'rate-limiter-flexible'])
    })
  }

  it('are found by the CommonJS build installed under a path with # and %, with a global document', () => {
    // Where jsdom-style test setups and unusual install paths put it: resolution must start from the file itself.
    const root = mkdtempSync(join(tmpdir(), 'aegis-deps-'))
    try {
      const modules = join(root, 'a#b%20c', 'node_modules')
      const installed = join(modules, '@aegis', 'core', 'dist', 'index.cjs')
      mkdirSync(join(installed, '..'), { recursive: true })
      cpSync(built('index.cjs'), installed)
      const own = fileURLToPath(new URL('../node_modules/', import.meta.url))
      for (const name of readdirSync(own)) {
        if (name.startsWith('.') || name.startsWith('@')) continue
        symlinkSync(join(own, name), join(modules, name))
      }
      const script = `
        globalThis.document = { baseURI: 'http://localhost/', currentScript: null }
        const { createRequire } = await import('node:module')
        const { createAegis } = createRequire(process.cwd() + '/')(${JSON.stringify(installed)})
        const aegis = createAegis({
          limiter: { algorithm: 'fixed-window' },
          proxy: [{ prefix: '/api', upstreams: ['http://127.0.0.1:9'], healthCheck: false }],
        })
        await aegis.close()
        console.log('ok')
      `
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
      expect(out.trim().split('\n').pop()).toBe('ok')
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  })
})
