/**
 * Route learning for the ghost cache: URLs grouped into templates (`/users/:id`), and per
 * template what was learned, served and refused (and why), with a few learned base keys
 * kept as samples so that `synthesize` mode can answer an unseen URL of a learned
 * template with its nearest learned sibling.
 *
 * A segment becomes a placeholder in two ways. By its shape, read in one pass over its
 * characters (no regular expression, so no backtracking on a hostile path): digits
 * (`:id`), a UUID (`:uuid`), a long hex or base64url-like token (`:hash`). Or by
 * cardinality, a simple form of the Drain log-template idea: the literals seen at one
 * position under one templated parent are remembered up to a bound, and once that many
 * are known, any other literal there is `:param`. Only paths whose responses were
 * learned teach literals (`learned()`); `templateOf()` only reads, so scanners' 404s and
 * requests to a failing upstream cannot push a route's names into `:param`.
 *
 * Templates are paths only: the hosts a cache fronts share one template, its counters
 * and its samples, and `nearest()` keeps to the request's own host.
 *
 * Every structure is bounded whatever arrives: templates (least recently used out, those
 * never learned first), positions of the cardinality tree (LRU), literals per position,
 * segments per template, samples per template and their characters.
 */
import { hash32 } from '../kernel/hash.js'
import { LRUCache } from 'lru-cache'

/** The placeholders a template can hold, and what each stands for. */
export const PLACEHOLDER = {
  /** Digits only: `/users/42`. */
  id: ':id',
  /** A UUID in its 8-4-4-4-12 hex form, any version. */
  uuid: ':uuid',
  /**
   * 16+ characters of `[A-Za-z0-9_-]` with letters and digits, either all hex (digests,
   * ObjectIds) or switching between lower case, upper case and digits at least once
   * every 4 characters (base64url ids, `cus_NffrFeUfNV2Hib`) — which a slug such as
   * `my-post-2024-recap` does not.
   */
  hash: ':hash',
  /** A literal past the bound of distinct values at its position, or longer than 64 characters. */
  param: ':param',
  /** Every segment past the 32nd. */
  rest: ':rest',
} as const

const PLACEHOLDERS: ReadonlySet<string> = new Set(Object.values(PLACEHOLDER))

/** The template of a target not in origin form (`*`, `http://…`), which has no path to group. */
export const OTHER_TEMPLATE = '(other)'

/** Options of {@link createTemplates}. */
export interface TemplatesOptions {
  /** Most templates tracked (default 1,000). Past it, the least recently used goes, one never learned first. */
  readonly maxTemplates?: number
  /** Most base keys kept per template as samples for `nearest()` (default 32). */
  readonly samplesPerTemplate?: number
  /** Distinct literals remembered at one position before any other becomes `:param` (default 20). */
  readonly distinctPerPosition?: number
  /** Most positions of the cardinality tree remembered, least recently learned out (default 2 × `maxTemplates`). */
  readonly maxPositions?: number
}

/** What `stats()` says of one template. */
export interface TemplateStats {
  readonly template: string
  /** Responses learned under it. */
  readonly learned: number
  /** Ghost answers served under it, in all. */
  readonly served: number
  /** Ghost answers by the reason given to `served()` (at most 16 reasons, then `other`). */
  readonly servedBy: Readonly<Record<string, number>>
  /** Responses not learned, by reason (`private`, `set-cookie`, `too-large`, `vary-star`…; at most 16, then `other`). */
  readonly refused: Readonly<Record<string, number>>
  /** Distinct base keys learned: exact up to 64, then a HyperLogLog estimate (±9%). */
  readonly keys: number
}

/** The sizes of what is held, for gauges and for tests of the bounds. */
export interface TemplatesFootprint {
  /** Templates tracked, and how many of them have learned something. */
  readonly templates: number
  readonly learnedTemplates: number
  /** Templates dropped to stay within `maxTemplates`. */
  readonly evicted: number
  /** Positions of the cardinality tree, and literals remembered in them. */
  readonly positions: number
  readonly literals: number
  /** Samples kept, and their characters. */
  readonly samples: number
  readonly sampleChars: number
}

/**
 * The route learner of one ghost cache.
 *
 * @example
 * const templates = createTemplates()
 * const base = baseKey('GET', 'example.com', '/users/1?a=1') // 'GET example.com/users/1?a=1'
 * const template = templates.templateOf(pathOfBase(base))    // '/users/:id'
 * templates.learned(template, base)
 * templates.refused(templates.templateOf('/me'), 'private')
 * // later, the upstream down and /users/2 never learned (synthesize mode):
 * templates.nearest('/users/:id', 'GET example.com/users/2') // 'GET example.com/users/1?a=1'
 */
export interface Templates {
  /**
   * The template of a path (a query, if any, is ignored). Reads what `learned()` taught;
   * changes nothing. A template is its own template.
   *
   * @example
   * templates.templateOf('/users/42/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301?x=1') // '/users/:id/orders/:uuid'
   */
  templateOf(path: string): string
  /**
   * A response to `base` (key.ts `baseKey()`) was learned under `template`: counts it,
   * keeps `base` as the template's most recent sample, and teaches the literals of its
   * path to the cardinality tree.
   */
  learned(template: string, base: string): void
  /** A ghost answer was served under `template`; `reason` says why (`error`, `breaker-open`, `synthesized`…). */
  served(template: string, reason: string): void
  /** A response under `template` was not learned, for `reason` (policy.ts `Refusal`, `too-large`…). */
  refused(template: string, reason: string): void
  /** The sample base keys of `template`, most recently learned first (at most `samplesPerTemplate`). */
  siblings(template: string): readonly string[]
  /** Drop `base` from the samples of `template` (the store no longer holds it); counters stay. */
  unlearned(template: string, base: string): void
  /**
   * The learned sibling nearest to the request's base key `base`, or `undefined`. Only
   * samples with the same method and host qualify (a sibling from another host is never
   * offered); among them, the most path segments equal at the same place, then the most
   * query parameters in common, then the smallest distance between segments that are
   * numbers in both, then the most recently learned. The engine must still look the
   * sibling up with the request's own fields, so that `Vary` and a credential-scoped key
   * keep holding; when the store no longer has it, `unlearned()` drops it and the next of
   * `ranked()` may serve.
   *
   * @example
   * templates.nearest('/users/:id', 'GET example.com/users/8') // 'GET example.com/users/7' rather than '…/users/1'
   */
  nearest(template: string, base: string): string | undefined
  /** Every qualifying sample of `template`, nearest to `base` first (the order `nearest()` picks from). */
  ranked(template: string, base: string): string[]
  /** Templates, most served first, then most learned, then most refused, then by name. */
  stats(): TemplateStats[]
  /** Forget one template's counters and samples; with no argument, everything (the cardinality tree too). */
  forget(template?: string): void
  /** What is held, counted (a walk over positions and templates: for gauges and tests, not per request). */
  footprint(): TemplatesFootprint
}

/** Segments past this many are one `:rest`: a template's length is bounded. */
const MAX_SEGMENTS = 32
/** A literal longer than this is no route name: `:param` at once, never remembered. */
const MAX_LITERAL = 64
/** Longer segments are not even scanned for a shape. */
const MAX_SHAPED = 128
/** Reasons counted per template before the rest are counted as `other`. */
const MAX_REASONS = 16
/** Characters of samples per template: `samplesPerTemplate` bases of this length on average. */
const SAMPLE_CHARS = 128
/** Distinct keys counted exactly up to this many, then estimated. */
const EXACT_KEYS = 64
/** HyperLogLog registers (2^7): 128 bytes per template, a standard error of 1.04/√128 ≈ 9%. */
const HLL_BITS = 7
const HLL_M = 1 << HLL_BITS
const HLL_ALPHA = 0.7213 / (1 + 1.079 / HLL_M)

const SLASH = 0x2f

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46)

/** The placeholder a segment's shape calls for, or `undefined` for a literal. One pass, O(length). */
function shapeOf(segment: string): string | undefined {
  const n = segment.length
  if (n === 0 || n > MAX_SHAPED) return undefined
  if (n === 36 && isUuid(segment)) return PLACEHOLDER.uuid
  let digits = 0
  let letters = 0
  let hex = true
  let transitions = 0
  // Character class of the previous alphanumeric: 1 digit, 2 lower, 3 upper; 0 after a separator.
  let previous = 0
  for (let i = 0; i < n; i++) {
    const c = segment.charCodeAt(i)
    let kind: number
    if (isDigit(c)) {
      kind = 1
      digits++
    } else if (c >= 0x61 && c <= 0x7a) kind = 2
    else if (c >= 0x41 && c <= 0x5a) kind = 3
    else if (c === 0x2d || c === 0x5f) kind = 0
    else return undefined // not a token: a literal
    if (kind >= 2) letters++
    if (!isHex(c)) hex = false
    if (kind !== 0 && previous !== 0 && kind !== previous) transitions++
    previous = kind
  }
  if (digits === n) return PLACEHOLDER.id
  if (n < 16 || digits === 0 || letters === 0) return undefined
  if (hex || transitions * 4 >= n) return PLACEHOLDER.hash
  return undefined
}

function isUuid(s: string): boolean {
  for (let i = 0; i < 36; i++) {
    const c = s.charCodeAt(i)
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 0x2d) return false
    } else if (!isHex(c)) return false
  }
  return true
}

/** Whether a segment is all digits (so two of them have a distance). */
function isNumber(s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return false
  return true
}

/** Where the path of a base key starts: after the method and the host. */
function pathStart(base: string): number {
  const space = base.indexOf(' ')
  const slash = base.indexOf('/', space + 1)
  return slash < 0 ? base.length : slash
}

/**
 * The path of a base key (key.ts `baseKey()`), without its query.
 *
 * @example
 * pathOfBase('GET example.com/users/1?a=1') // '/users/1'
 */
export function pathOfBase(base: string): string {
  const start = pathStart(base)
  const q = base.indexOf('?', start)
  return start === base.length ? '/' : base.slice(start, q < 0 ? base.length : q)
}

/** Distinct base keys of a template: a small exact set, then a HyperLogLog of fixed size. */
class DistinctCounter {
  private exact: Set<number> | undefined = new Set()
  private registers: Uint8Array | undefined

  add(h: number): void {
    if (this.exact !== undefined) {
      this.exact.add(h)
      if (this.exact.size <= EXACT_KEYS) return
      this.registers = new Uint8Array(HLL_M)
      for (const x of this.exact) this.register(x)
      this.exact = undefined
      return
    }
    this.register(h)
  }

  private register(h: number): void {
    const registers = this.registers as Uint8Array
    const j = h >>> (32 - HLL_BITS)
    const rank = Math.min(Math.clz32(h << HLL_BITS) + 1, 32 - HLL_BITS + 1)
    if (rank > (registers[j] as number)) registers[j] = rank
  }

  get count(): number {
    if (this.exact !== undefined) return this.exact.size
    const registers = this.registers as Uint8Array
    let sum = 0
    let zeros = 0
    for (const r of registers) {
      sum += 2 ** -r
      if (r === 0) zeros++
    }
    const estimate = (HLL_ALPHA * HLL_M * HLL_M) / sum
    // Small range: linear counting is the better estimate (Flajolet et al. 2007, §4).
    if (estimate <= 2.5 * HLL_M && zeros > 0) return Math.round(HLL_M * Math.log(HLL_M / zeros))
    return Math.round(estimate)
  }
}

/** Counts by reason, at most `MAX_REASONS` of them: reasons come from callers, and stay bounded here. */
function countReason(reasons: Map<string, number>, reason: string): void {
  const key = reasons.has(reason) || reasons.size < MAX_REASONS ? reason : 'other'
  reasons.set(key, (reasons.get(key) ?? 0) + 1)
}

interface Entry {
  learned: number
  served: number
  readonly servedBy: Map<string, number>
  readonly refused: Map<string, number>
  readonly keys: DistinctCounter
  /** Base keys, most recent first. */
  samples: string[]
  sampleChars: number
}

/** One position of the cardinality tree: the literals known there. */
interface Position {
  readonly id: number
  readonly known: Set<string>
}

/** A base key split for `nearest()`: method and host, path segments, query parameters. */
interface Parsed {
  readonly origin: string
  readonly segments: readonly string[]
  readonly params: readonly string[]
}

function parse(base: string): Parsed {
  const start = pathStart(base)
  const q = base.indexOf('?', start)
  const end = q < 0 ? base.length : q
  const segments = base.slice(start + 1, end).split('/', MAX_SEGMENTS)
  const params = q < 0 ? [] : base.slice(q + 1).split('&', MAX_SEGMENTS)
  return { origin: base.slice(0, start), segments, params }
}

/** How near `sample` is to `wanted`, as comparable parts: larger is nearer for the first two, smaller for the last. */
function nearness(wanted: Parsed, sample: Parsed): [shared: number, params: number, distance: number] {
  let shared = 0
  let distance = 0
  const n = Math.min(wanted.segments.length, sample.segments.length)
  for (let i = 0; i < n; i++) {
    const a = wanted.segments[i] as string
    const b = sample.segments[i] as string
    if (a === b) shared++
    else if (isNumber(a) && isNumber(b)) distance += Math.abs(Number(a) - Number(b))
  }
  let params = 0
  for (const p of sample.params) if (wanted.params.includes(p)) params++
  return [shared, params, distance]
}

/**
 * Create a route learner: templates of paths, their counters and samples, all bounded.
 *
 * @example
 * const templates = createTemplates({ maxTemplates: 500 })
 * templates.templateOf('/items/507f1f77bcf86cd799439011') // '/items/:hash'
 * templates.learned('/items/:hash', 'GET shop.example/items/507f1f77bcf86cd799439011')
 * templates.stats() // [{ template: '/items/:hash', learned: 1, served: 0, servedBy: {}, refused: {}, keys: 1 }]
 */
export function createTemplates(options: TemplatesOptions = {}): Templates {
  const whole = (value: number | undefined, fallback: number): number =>
    value === undefined || !Number.isFinite(value) ? fallback : Math.max(1, Math.floor(value))
  const maxTemplates = whole(options.maxTemplates, 1000)
  const samplesPerTemplate = whole(options.samplesPerTemplate, 32)
  const distinct = whole(options.distinctPerPosition, 20)
  const sampleBudget = samplesPerTemplate * SAMPLE_CHARS

  // Two insertion-ordered maps make one LRU (oldest first) in two tiers: a template that
  // learned something is evicted only when no other one is left, so a flood of refused or
  // unknown paths cannot push out the samples synthesize mode answers from.
  const learnedTier = new Map<string, Entry>()
  const otherTier = new Map<string, Entry>()
  let evicted = 0

  // The cardinality tree, flattened: a position is found by its parent's id and the
  // templated segment leading to it, so a lookup hashes a short key, never a whole prefix.
  const root: Position = { id: 0, known: new Set() }
  let nextId = 1
  const positions = new LRUCache<string, Position>({ max: whole(options.maxPositions, 2 * maxTemplates) })

  /** The template of `path`; with `learn`, its literals are remembered where there is room. */
  function walk(path: string, learn: boolean): string {
    const q = path.indexOf('?')
    const end = q < 0 ? path.length : q
    if (end === 0) return '/'
    if (path.charCodeAt(0) !== SLASH) return OTHER_TEMPLATE
    let template = ''
    let position: Position | undefined = root
    let start = 1
    for (let n = 0; ; n++) {
      if (n === MAX_SEGMENTS) {
        template += `/${PLACEHOLDER.rest}`
        break
      }
      let slash = path.indexOf('/', start)
      if (slash < 0 || slash > end) slash = end
      const segment = path.slice(start, slash)
      let part = shapeOf(segment)
      if (part === undefined) {
        // An empty segment (the root, a trailing slash, `//`) is structure, not a name; a
        // placeholder stays itself, so that a template is its own template.
        if (segment.length === 0 || PLACEHOLDERS.has(segment)) part = segment
        else if (segment.length > MAX_LITERAL) part = PLACEHOLDER.param
        else if (position === undefined || position.known.has(segment)) part = segment
        else if (position.known.size >= distinct) part = PLACEHOLDER.param
        else {
          if (learn) position.known.add(segment)
          part = segment
        }
      }
      template += `/${part}`
      if (slash === end) break
      if (position !== undefined) {
        const key: string = `${position.id}/${part}`
        let child: Position | undefined = learn ? positions.get(key) : positions.peek(key)
        if (child === undefined && learn) {
          child = { id: nextId++, known: new Set() }
          positions.set(key, child)
        }
        position = child
      }
      start = slash + 1
    }
    return template
  }

  function entryOf(template: string, learning: boolean): Entry {
    let entry = learnedTier.get(template)
    if (entry !== undefined) {
      learnedTier.delete(template)
      learnedTier.set(template, entry)
      return entry
    }
    entry = otherTier.get(template)
    if (entry !== undefined) {
      otherTier.delete(template)
      ;(learning ? learnedTier : otherTier).set(template, entry)
      return entry
    }
    if (learnedTier.size + otherTier.size >= maxTemplates) {
      const tier = otherTier.size > 0 ? otherTier : learnedTier
      const oldest = tier.keys().next()
      if (oldest.done !== true) {
        tier.delete(oldest.value)
        evicted++
      }
    }
    entry = {
      learned: 0,
      served: 0,
      servedBy: new Map(),
      refused: new Map(),
      keys: new DistinctCounter(),
      samples: [],
      sampleChars: 0,
    }
    ;(learning ? learnedTier : otherTier).set(template, entry)
    return entry
  }

  const find = (template: string): Entry | undefined => learnedTier.get(template) ?? otherTier.get(template)

  function dropSample(entry: Entry, base: string): void {
    const i = entry.samples.indexOf(base)
    if (i < 0) return
    entry.samples.splice(i, 1)
    entry.sampleChars -= base.length
  }

  function ranked(template: string, base: string): string[] {
    const entry = find(template)
    if (entry === undefined || entry.samples.length === 0) return []
    const wanted = parse(base)
    const scored: { base: string; score: [number, number, number]; order: number }[] = []
    entry.samples.forEach((sample, order) => {
      const parsed = parse(sample)
      if (parsed.origin === wanted.origin)
        scored.push({ base: sample, score: nearness(wanted, parsed), order })
    })
    scored.sort(
      (a, b) =>
        b.score[0] - a.score[0] || b.score[1] - a.score[1] || a.score[2] - b.score[2] || a.order - b.order,
    )
    return scored.map((s) => s.base)
  }

  return {
    templateOf: (path) => walk(path, false),
    learned(template, base) {
      const entry = entryOf(template, true)
      entry.learned++
      entry.keys.add(hash32(base))
      dropSample(entry, base)
      // A base longer than the template's whole budget is counted but not kept.
      if (base.length <= sampleBudget) {
        entry.samples.unshift(base)
        entry.sampleChars += base.length
        while (entry.samples.length > samplesPerTemplate || entry.sampleChars > sampleBudget)
          entry.sampleChars -= (entry.samples.pop() as string).length
      }
      walk(pathOfBase(base), true)
    },
    served(template, reason) {
      const entry = entryOf(template, false)
      entry.served++
      countReason(entry.servedBy, reason)
    },
    refused(template, reason) {
      countReason(entryOf(template, false).refused, reason)
    },
    siblings: (template) => find(template)?.samples.slice() ?? [],
    unlearned(template, base) {
      const entry = find(template)
      if (entry !== undefined) dropSample(entry, base)
    },
    nearest: (template, base) => ranked(template, base)[0],
    ranked,
    stats() {
      const rows: { stats: TemplateStats; refused: number }[] = []
      for (const tier of [learnedTier, otherTier])
        for (const [template, e] of tier) {
          let refused = 0
          for (const n of e.refused.values()) refused += n
          const stats = {
            template,
            learned: e.learned,
            served: e.served,
            servedBy: Object.fromEntries(e.servedBy),
            refused: Object.fromEntries(e.refused),
            keys: e.keys.count,
          }
          rows.push({ stats, refused })
        }
      rows.sort(
        (a, b) =>
          b.stats.served - a.stats.served ||
          b.stats.learned - a.stats.learned ||
          b.refused - a.refused ||
          (a.stats.template < b.stats.template ? -1 : a.stats.template > b.stats.template ? 1 : 0),
      )
      return rows.map((r) => r.stats)
    },
    forget(template) {
      if (template !== undefined) {
        learnedTier.delete(template)
        otherTier.delete(template)
        return
      }
      learnedTier.clear()
      otherTier.clear()
      positions.clear()
      root.known.clear()
    },
    footprint() {
      let samples = 0
      let sampleChars = 0
      for (const tier of [learnedTier, otherTier])
        for (const e of tier.values()) {
          samples += e.samples.length
          sampleChars += e.sampleChars
        }
      let literals = root.known.size
      for (const p of positions.values()) literals += p.known.size
      return {
        templates: learnedTier.size + otherTier.size,
        learnedTemplates: learnedTier.size,
        evicted,
        positions: positions.size + 1,
        literals,
        samples,
        sampleChars,
      }
    },
  }
}
