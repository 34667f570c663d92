/**
 * After tsup: point the engines' `declare module '<relative path>'` augmentations in the
 * bundled declarations at the bundle itself.
 *
 * Engines declare their events by declaration merging on `AegisEvents`, from their own
 * folder (`declare module '../kernel/events.js' { interface AegisEvents { … } }` in
 * src/gateway/events.ts). tsup bundles every declaration into one dist/index.d.ts (and
 * its .d.cts copy) with rollup-plugin-dts 6.1.1, which copies such a block verbatim: its
 * relative path then names a file that is not published, and TypeScript silently drops
 * an augmentation it cannot resolve — a consumer's `AegisEvents` would be empty. Every
 * module the path named is inside the bundle now, so the block's target is the bundle:
 * `'./index.js'` from index.d.ts, `'./index.cjs'` from index.d.cts (each its own file, so
 * ESM and CommonJS consumers both see the merge). rollup-plugin-dts ≥ 6.3 rewrites these
 * itself (its issues #345, #393); tsup pins 6.1.1, and has no hook after its declaration
 * build (`onSuccess` may run before it ends), hence this step in the build script.
 * test/public-types.test.ts compiles a consumer against the result.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const dist = fileURLToPath(new URL('../dist/', import.meta.url))
const RELATIVE_AUGMENTATION = /^(\s*declare module )(['"])\.\.?\/[^'"]*\2/gm

for (const [file, self] of [
  ['index.d.ts', './index.js'],
  ['index.d.cts', './index.cjs'],
]) {
  const path = `${dist}${file}`
  const text = readFileSync(path, 'utf8')
  const fixed = text.replace(RELATIVE_AUGMENTATION, (_m, head, quote) => `${head}${quote}${self}${quote}`)
  if (fixed !== text) writeFileSync(path, fixed)
}
