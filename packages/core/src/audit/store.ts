/**
 * Where a trail is kept: one small interface, three stores (memory here, SQLite in
 * sqlite.ts, Redis Streams in redis.ts). Methods return `T | Promise<T>`, so the memory
 * store (and SQLite, whose driver is synchronous) answer at once.
 *
 * A store numbers and chains what it appends (`seal` after its own head), so the chain
 * is the store's, not a process's: two writers of one SQLite file or one Redis stream
 * extend one chain, each taking the head as the store holds it when it writes.
 */
import {
  GENESIS,
  seal,
  type AuditCheckpoint,
  type AuditDraft,
  type AuditRecord,
  type ChainLink,
  type ChainSource,
  type StoredRecord,
} from './chain.js'

/** A query as stores take it: every bound resolved. */
export interface StoreQuery {
  /** Only seq > after. */
  readonly after: number
  /** Only seq < before. */
  readonly before: number
  /** Only time ≥ from and < to, in ms since the epoch. */
  readonly from: number
  readonly to: number
  readonly types: ReadonlySet<string> | undefined
  readonly actor: string | undefined
  readonly client: string | undefined
  readonly route: string | undefined
  readonly limit: number
  /** Newest first. */
  readonly desc: boolean
}

/** What a store found: the records, and where to go on from (`null`: nothing more). */
export interface StorePage {
  readonly records: readonly AuditRecord[]
  /** The seq to pass as `after` (ascending) or `before` (newest first) for the next page. */
  readonly next: number | null
}

/** What a store knows of itself. */
export interface StoreStats {
  readonly entries: number
  readonly byType: Readonly<Record<string, number>>
  readonly first: { readonly seq: number; readonly time: string } | null
  readonly last: { readonly seq: number; readonly time: string } | null
  /** Bytes it takes (SQLite: the database and its WAL; Redis: the stream's memory); `null` in memory. */
  readonly bytes: number | null
  readonly checkpoints: number
}

/** What retention removes, one batch per call. */
export interface PruneRule {
  /** Records older than this (ms since the epoch) go. */
  readonly before: number
  readonly maxEntries: number
  readonly maxBytes: number | undefined
  /** At most this many in one call. */
  readonly batch: number
}

export interface AuditStore extends ChainSource {
  readonly kind: 'memory' | 'sqlite' | 'redis'
  /** Number, chain and keep drafts after the store's head; the records as written. */
  append(drafts: readonly AuditDraft[]): readonly AuditRecord[] | Promise<readonly AuditRecord[]>
  search(query: StoreQuery): StorePage | Promise<StorePage>
  addCheckpoint(checkpoint: AuditCheckpoint): void | Promise<void>
  /** Remove one batch of what the rule says must go (the oldest first); how many went. */
  prune(rule: PruneRule): number | Promise<number>
  stats(): StoreStats | Promise<StoreStats>
  close(): void | Promise<void>
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)

/** The fields queries filter on, from a record: who acted, which client, which route. */
export function facetsOf(r: Pick<AuditRecord, 'data'>): {
  actor: string | undefined
  client: string | undefined
  route: string | undefined
} {
  const d = r.data
  return {
    actor: str(d.actor),
    client: str(d.client) ?? str(d.source) ?? str(d.key),
    route: str(d.route) ?? str(d.path),
  }
}

/** Whether a record passes a query's filters (not its seq bounds). */
export function matches(r: AuditRecord, q: StoreQuery): boolean {
  if (q.types !== undefined && !q.types.has(r.type)) return false
  if (q.from > -Infinity || q.to < Infinity) {
    const t = Date.parse(r.time)
    if (t < q.from || t >= q.to) return false
  }
  if (q.actor === undefined && q.client === undefined && q.route === undefined) return true
  const f = facetsOf(r)
  return (
    (q.actor === undefined || f.actor === q.actor) &&
    (q.client === undefined || f.client === q.client) &&
    (q.route === undefined || f.route === q.route)
  )
}

/**
 * The trail in this process' memory: the newest `capacity` records (and no older than
 * the retention allows); the link before the oldest is kept as the anchor, so the kept
 * part verifies on its own.
 *
 * @example
 * const store = createMemoryStore(1_000)
 * store.append([{ version: 1, time: new Date().toISOString(), type: 'x', writer: 'w', data: {} }])
 */
export function createMemoryStore(capacity: number): AuditStore {
  let records: AuditRecord[] = []
  let start = 0
  let anchor: ChainLink = { seq: 0, hash: GENESIS }
  let head: ChainLink = { seq: 0, hash: GENESIS }
  const checkpoints: AuditCheckpoint[] = []
  const byType = new Map<string, number>()
  const count = (): number => records.length - start
  const at = (i: number): AuditRecord => records[start + i] as AuditRecord

  const dropOldest = (): void => {
    const r = at(0)
    anchor = { seq: r.seq, hash: r.hash }
    start++
    const n = (byType.get(r.type) ?? 1) - 1
    if (n === 0) byType.delete(r.type)
    else byType.set(r.type, n)
    // Compact now and then, not on every drop.
    if (start > 1_024 && start * 2 > records.length) {
      records = records.slice(start)
      start = 0
    }
    while (checkpoints.length > 1 && (checkpoints[1] as AuditCheckpoint).seq <= anchor.seq)
      checkpoints.shift()
  }

  /** Index of the first kept record with seq > after (seqs are contiguous in memory). */
  const indexAfter = (after: number): number => {
    if (count() === 0) return 0
    return Math.min(Math.max(after + 1 - at(0).seq, 0), count())
  }

  return {
    kind: 'memory',
    append(drafts) {
      const sealed = seal(head, drafts)
      for (const r of sealed) {
        records.push(r)
        byType.set(r.type, (byType.get(r.type) ?? 0) + 1)
        if (count() > capacity) dropOldest()
      }
      const last = sealed[sealed.length - 1]
      if (last !== undefined) head = { seq: last.seq, hash: last.hash }
      return sealed
    },
    search(q) {
      const out: AuditRecord[] = []
      const n = count()
      if (!q.desc) {
        for (let i = indexAfter(q.after); i < n && out.length < q.limit; i++) {
          const r = at(i)
          if (r.seq >= q.before) return { records: out, next: null }
          if (matches(r, q)) out.push(r)
        }
        const last = out[out.length - 1]
        return { records: out, next: out.length === q.limit && last !== undefined ? last.seq : null }
      }
      for (let i = indexAfter(q.before - 1) - 1; i >= 0 && out.length < q.limit; i--) {
        const r = at(i)
        if (r.seq <= q.after) return { records: out, next: null }
        if (matches(r, q)) out.push(r)
      }
      const last = out[out.length - 1]
      return { records: out, next: out.length === q.limit && last !== undefined ? last.seq : null }
    },
    addCheckpoint(c) {
      checkpoints.push(c)
      // Bounded: the ring's span needs few of them.
      if (checkpoints.length > 10_000) checkpoints.shift()
    },
    prune(rule) {
      let removed = 0
      while (count() > 0 && removed < rule.batch) {
        const oldest = at(0)
        if (count() <= rule.maxEntries && Date.parse(oldest.time) >= rule.before) break
        dropOldest()
        removed++
      }
      return removed
    },
    stats() {
      const first = count() > 0 ? at(0) : undefined
      const last = count() > 0 ? at(count() - 1) : undefined
      return {
        entries: count(),
        byType: Object.fromEntries(byType),
        first: first === undefined ? null : { seq: first.seq, time: first.time },
        last: last === undefined ? null : { seq: last.seq, time: last.time },
        bytes: null,
        checkpoints: checkpoints.length,
      }
    },
    anchor: () => anchor,
    head: () => head,
    rows(after, limit) {
      const out: StoredRecord[] = []
      for (let i = indexAfter(after); i < count() && out.length < limit; i++) {
        const r = at(i)
        out.push({ seq: r.seq, record: r })
      }
      return out
    },
    checkpoints: () => checkpoints,
    close() {
      // Nothing to release.
    },
  }
}
