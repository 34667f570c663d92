import { percentDecode } from '../validator/path.js'

/**
 * Route specs (`'POST /login'`, `'/api/*'`, `'GET /users/:id'`) matched before the
 * router runs, on the raw path. Matching is deliberately loose — case-insensitive,
 * percent-decoded, duplicate and trailing slashes and single-dot segments (RFC 3986
 * §5.2.4: `/api/./login`, `/api/%2e/login`) ignored — so that every spelling
 * a router might send to `/login` is counted against `/login`'s policy: a policy
 * may cover more than its route, never less.
 */
export interface RouteMatcher<T> {
  /** Everything matching this request, in declaration order; the same empty array when none. */
  match(method: string, url: string): readonly T[]
  readonly size: number
}

interface Compiled<T> {
  method: string | undefined
  segments: string[]
  wildcard: boolean
  value: T
}

/** The path of a URL as the matcher compares it. */
export function normalizePath(url: string): string {
  let end = url.length
  const q = url.indexOf('?')
  if (q >= 0) end = q
  const h = url.indexOf('#')
  if (h >= 0 && h < end) end = h
  let path = url.slice(0, end)
  // Absolute-form targets: keep the path only.
  if (path.charCodeAt(0) !== 0x2f) {
    const scheme = path.indexOf('://')
    if (scheme >= 0) {
      const slash = path.indexOf('/', scheme + 3)
      path = slash < 0 ? '/' : path.slice(slash)
    }
  }
  path = percentDecode(path).replace(/\\/g, '/').toLowerCase()
  // Matrix parameters (`/login;jsessionid=x`) route to `/login` in some stacks.
  if (path.includes(';')) path = path.replace(/;[^/]*/g, '')
  path = path.replace(/\/{2,}/g, '/')
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1)
  return path
}

function compile<T>(spec: string, value: T): Compiled<T> {
  const space = spec.indexOf(' ')
  const method = space < 0 ? undefined : spec.slice(0, space).toUpperCase()
  let path = normalizePath(spec.slice(space + 1).trim())
  let wildcard = false
  if (path.endsWith('/*') || path === '*') {
    wildcard = true
    path = path.slice(0, -2)
  }
  return { method, segments: segmentsOf(path), wildcard, value }
}

function matches(route: Compiled<unknown>, method: string, segments: readonly string[]): boolean {
  // A GET route also answers HEAD in every router.
  if (route.method !== undefined && route.method !== method && !(route.method === 'GET' && method === 'HEAD'))
    return false
  const want = route.segments
  if (route.wildcard ? segments.length < want.length : segments.length !== want.length) return false
  for (let i = 0; i < want.length; i++) {
    const w = want[i] as string
    if (w.charCodeAt(0) === 0x3a /* : */) continue
    if (w !== segments[i]) return false
  }
  return true
}

/** A normalised path's segments, without the empty and single-dot ones. */
const segmentsOf = (path: string): string[] => path.split('/').filter((s) => s !== '' && s !== '.')

const NONE: readonly never[] = Object.freeze([])

/**
 * @example
 * const routes = createRouteMatcher([['POST /login', loginPolicy]])
 * routes.match('POST', '/Login/?next=/') // [loginPolicy]
 */
export function createRouteMatcher<T>(entries: ReadonlyArray<readonly [string, T]>): RouteMatcher<T> {
  const routes = entries.map(([spec, value]) => compile(spec, value))
  return {
    size: routes.length,
    match(method, url) {
      if (routes.length === 0) return NONE
      const segments = segmentsOf(normalizePath(url))
      let found: T[] | undefined
      for (const r of routes) {
        if (matches(r, method, segments)) (found ??= []).push(r.value)
      }
      return found ?? NONE
    },
  }
}
