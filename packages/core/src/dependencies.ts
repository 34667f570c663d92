/**
 * The heavy dependencies that only some configurations use — undici and
 * opossum (proxy routes), ioredis (a Redis store), rate-limiter-flexible (the
 * fixed-window algorithm) — are loaded the first time one is needed, not when
 * Aegis is imported. A default `aegis()` then keeps about 9 MB less code on
 * the heap, which on Express is worth more than it looks: a smaller live heap
 * means fewer fresh pages faulted in between full garbage collections (about
 * one page fault less per request, measured; docs/performance.md).
 *
 * `require` of these CommonJS packages returns the same module instance an
 * application's own `import` of them gets.
 */
import { createRequire } from 'node:module'
import type * as Undici from 'undici'
import type * as IORedis from 'ioredis'
import type * as RateLimiterFlexible from 'rate-limiter-flexible'
import type Opossum from 'opossum'

const load = createRequire(import.meta.url)

/** `id`, required on the first call and remembered. */
function onFirstUse<T>(id: string): () => T {
  let loaded: T | undefined
  return () => (loaded ??= load(id) as T)
}

export const undici = onFirstUse<typeof Undici>('undici')
export const ioredis = onFirstUse<typeof IORedis>('ioredis')
export const rateLimiterFlexible = onFirstUse<typeof RateLimiterFlexible>('rate-limiter-flexible')
export const opossum = onFirstUse<typeof Opossum>('opossum')
