/** The path of a request target: what precedes its query. */
export function pathOf(url: string): string {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

// A single-dot segment, raw or with its dot percent-encoded (RFC 3986 §6.2.2.2:
// `%2E` is the unreserved `.`; the WHATWG URL parser reads it so too).
const DOT_SEGMENT = /^(?:\.|%2e)$/i

/**
 * The request target with its single-dot path segments removed (RFC 3986
 * §5.2.4): `/api/./login` and `/api/%2e/login` are `/api/login`, as upstreams
 * that normalise (WHATWG URL, nginx, Spring) route them. The gateway forwards
 * this form, which is the path the limiter's route policies matched (they ignore
 * the same segments), so a policy covers every spelling of its path. `..` segments are left alone: the validator refuses them. The query
 * is kept as it is, and so is a target not in origin form (absolute form,
 * `*`). Returns `url` itself when there is nothing to remove (no allocation on
 * the common path).
 *
 * @example
 * normalizeTarget('/api/%2e/login?x=./y') // '/api/login?x=./y'
 */
export function normalizeTarget(url: string): string {
  // Origin form only: an absolute-form target's authority is no path (`http://./x`), and `*` has none.
  if (url.charCodeAt(0) !== 0x2f) return url
  const q = url.indexOf('?')
  const end = q < 0 ? url.length : q
  const dot = url.indexOf('/.', 0)
  const pct = url.indexOf('/%2', 0)
  if ((dot < 0 || dot >= end) && (pct < 0 || pct >= end)) return url
  const segments = url.slice(0, end).split('/')
  const kept: string[] = []
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string
    if (i > 0 && DOT_SEGMENT.test(segment)) {
      // A dot as the last segment leaves the directory it names: `/a/.` is `/a/`.
      if (i === segments.length - 1) kept.push('')
      continue
    }
    kept.push(segment)
  }
  const path = kept.join('/')
  if (path.length === end) return url
  return path + url.slice(end)
}
