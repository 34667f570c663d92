/** Prefix matching of proxy routes. */

/** The part of `url` under `prefix` (`''`, `/…` or `?…`), or `undefined` when `url` is elsewhere. */
export function underPrefix(prefix: string, url: string): string | undefined {
  // `''` and `?…`: the bare mount path of an Express mount (`/api` under `app.use('/api', …)`).
  if (prefix === '/') return url === '' || url.startsWith('/') || url.startsWith('?') ? url : undefined
  if (!url.startsWith(prefix)) return undefined
  const next = url.charCodeAt(prefix.length)
  // Only at a segment boundary: `/api` owns `/api/x` and `/api?q`, not `/apix`.
  if (Number.isNaN(next) || next === 0x2f || next === 0x3f) return url.slice(prefix.length)
  return undefined
}
