/**
 * The heavy dependencies that only some configurations use — undici and
 * opossum (proxy routes), ioredis (a Redis store), rate-limiter-flexible (the
 * fixed-window algorithm) — are loaded the first time one is needed, not when
 * Aegis is imported. A default `aegis()` then holds about 5 MB less heap and
 * imports in about two thirds of the time, with 24 MB less resident memory
 * (docs/performance.md, "What loading Aegis keeps in memory").
 *
 * `require` of these CommonJS packages returns the same module instance an
 * application's own `import` of them gets.
 */
import { createRequire } from 'node:module'
import type * as Undici from 'undici'
import type * as IORedis from 'ioredis'
import type * as RateLimiterFlexible from 'rate-limiter-flexible'
import type Opossum from 'opossum'

/**
 * Where this file is, to resolve from: `__filename` in the CommonJS build (whose
 * `import.meta.url` is defined away: tsup's shim for it misreads paths holding
 * `#` or `%` and a global `document`), `import.meta.url` in the ES module build.
 */
const here = (): string => (typeof __filename === 'string' ? __filename : import.meta.url)

let load: NodeJS.Require | undefined

/** `id`, required on the first call and remembered; nothing runs when Aegis is imported. */
function onFirstUse<T>(id: string): () => T {
  let loaded: T | undefined
  return () => (loaded ??= (load ??= createRequire(here()))(id) as T)
}

export const undici = onFirstUse<typeof Undici>('undici')
export const ioredis = onFirstUse<typeof IORedis>('ioredis')
export const rateLimiterFlexible = onFirstUse<typeof RateLimiterFlexible>('rate-limiter-flexible')
export const opossum = onFirstUse<typeof Opossum>('opossum')
