import { LRUCache } from 'lru-cache'
import { pathOf } from '../kernel/url.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const NUMBER = /^[0-9]+$/
const HEX = /^(?=.*[0-9])[0-9a-f]{8,}$/i
// Long mixed tokens (base64url ids, hashes): letters and digits, 16+ chars.
const TOKEN = /^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_-]{16,}$/

/**
 * Replace id-like path segments with `:id`.
 *
 * @example
 * templatize('/users/42/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301') // '/users/:id/orders/:id'
 */
export function templatize(path: string): string {
  const segments = pathOf(path).split('/')
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i] as string
    if (s.length > 0 && (NUMBER.test(s) || UUID.test(s) || HEX.test(s) || TOKEN.test(s))) segments[i] = ':id'
  }
  return segments.join('/') || '/'
}

/** Label used once the learner is full, and for requests no route matched. */
export const OTHER_ROUTE = '(other)'
export const UNMATCHED_ROUTE = '(unmatched)'
/** Label of requests Aegis answered itself (rejections, preflights). */
export const AEGIS_ROUTE = '(aegis)'

/**
 * The bounded set of route labels. `template` learns one from a raw path;
 * `bound` admits a label a framework reported (a matched pattern — but a mount
 * prefix may carry concrete values, e.g. Express' `req.baseUrl`). Past `max`
 * labels, new ones fold into `(other)`, so no source can grow the label set.
 *
 * @example
 * const learner = createRouteLearner(500)
 * learner.template('/users/42') // '/users/:id'
 * learner.bound('/users/:id')   // '/users/:id'
 */
export function createRouteLearner(max: number): {
  template(path: string): string
  bound(label: string): string
} {
  const known = new Set<string>()
  // Raw path → template, for the hot path; bounded, misses just recompute.
  const memo = new LRUCache<string, string>({ max: 4096 })
  const bound = (label: string): string => {
    if (known.has(label)) return label
    if (known.size >= max) return OTHER_ROUTE
    known.add(label)
    return label
  }
  return {
    template(path) {
      let t = memo.get(path)
      if (t === undefined) {
        t = bound(templatize(path))
        memo.set(path, t)
      }
      return t
    },
    bound,
  }
}
