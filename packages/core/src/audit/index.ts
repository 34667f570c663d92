/**
 * The audit trail: the changes in this instance's view of its upstreams (breaker,
 * health, ejection), the fault injection switched at run time, the operators' admin
 * actions one by one, and the security events of each minute counted per client and
 * reason. Given the instance's event bus, the log subscribes to the
 * {@link AUDITED_EVENTS} itself: engines emit, they do not know the trail.
 *
 * Every entry is redacted (redact.ts), numbered per trail and chained by SHA-256
 * (chain.ts), with signed checkpoints when the operator gives a key, and kept in a
 * store (store.ts: memory; sqlite.ts; redis.ts). Writing never blocks nor fails what
 * caused the entry: the memory store takes it at once; SQLite and Redis take batches
 * after the current turn of the event loop, retried with a backoff while the store
 * fails (counted, logged once per outage, bounded: the oldest waiting entries are
 * dropped past 10,000). Retention runs on a timer, in batches.
 *
 * The newest `size` entries this process wrote also stay readable at once, as they
 * always were, through `entries()` (the flat shape: the event's fields, `seq`, `time`).
 */
import type { KeyObject } from 'node:crypto'
import { hostname } from 'node:os'
import { AegisArgumentError, WarningCodes } from '../kernel/errors.js'
import type { AegisEventType, EventBus, TypedEvent } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import { deepFreeze } from '../kernel/option-helpers.js'
import type { Warn } from '../kernel/warnings.js'
import type { RedisConnection } from '../store/index.js'
import { createAggregator, SECURITY_EVENTS, type SecurityCount, type SecurityType } from './aggregate.js'
import {
  signCheckpoint,
  verifyChain,
  type AuditCheckpoint,
  type AuditDraft,
  type AuditRecord,
  type AuditVerification,
  type CheckpointKeys,
} from './chain.js'
import type { AuditConfig } from './options.js'
import { toAuditData } from './redact.js'
import { createRedisStore } from './redis.js'
import { openSqliteStore } from './sqlite.js'
import { createMemoryStore, type AuditStore, type StoreQuery, type StoreStats } from './store.js'
import '../limiter/events.js'
import './events.js'

export { auditSchema, auditSection } from './options.js'
export type { AuditConfig, AuditOptions, AuditSink } from './options.js'
export type { AdminAction, JsonPatchOperation } from './events.js'
export type { SecurityCount } from './aggregate.js'
export type { AuditCheckpoint, AuditFault, AuditRecord, AuditVerification } from './chain.js'
export { AUDIT_VERSION, GENESIS } from './chain.js'

/**
 * The event types the trail records, as the engines declared them on the bus
 * (`AegisEvents`, by declaration merging: the gateway's in gateway/events.ts). The
 * security events among them ({@link SECURITY_EVENTS}) are counted per minute.
 */
export const AUDITED_EVENTS = [
  'upstream.breaker',
  'upstream.health',
  'upstream.ejected',
  'proxy.chaos',
  'ghost.serving',
  'ghost.purged',
  'anomaly.blocked',
  'anomaly.campaign',
  'limiter.blocked',
  'admin.action',
  'upstream.admin',
  'config.reloaded',
  'config.refused',
] as const satisfies readonly AegisEventType[]

export { SECURITY_EVENTS }

/**
 * What happened: one of the {@link AUDITED_EVENTS}, with its type, exactly as the bus
 * carries it. `origin: 'peer'` (a breaker): applied from another instance (`breaker.shared`).
 */
export type AuditEvent = TypedEvent<(typeof AUDITED_EVENTS)[number]>

export type AuditType = AuditEvent['type']

type Numbered = { readonly seq: number; readonly time: string }

/**
 * One recorded event, flat: its type, its fields, `seq` and `time` (ISO 8601). A
 * security event's entry holds its minute's count ({@link SecurityCount}) instead.
 */
export type AuditEntry =
  | (Exclude<AuditEvent, { type: SecurityType }> & Numbered)
  | ({ readonly type: SecurityType } & SecurityCount & Numbered)

export interface AuditQuery<T extends AuditType = AuditType> {
  /** Only entries with a larger `seq` (the last one a reader saw); a whole number ≥ 0. */
  after?: number
  /** Only these types. */
  types?: readonly T[]
  /** At most this many (the oldest matching ones); a whole number ≥ 0. */
  limit?: number
}

/** A query of the store (`aegis.audit.query()`): every field optional, all of them combined. */
export interface AuditSearch {
  /** Only seq > after (paging forward). */
  after?: number
  /** Only seq < before (paging back, with `order: 'desc'`). */
  before?: number
  /** Only entries written at or after `from` and before `to` (a Date, ms since the epoch, or ISO 8601 text). */
  from?: Date | number | string
  to?: Date | number | string
  types?: readonly string[]
  /** Admin actions of this actor. */
  actor?: string
  /** Entries about this client (security counts: `client`; admin actions: `source`; anomaly blocks: `key`). */
  client?: string
  /** Entries about this route (a proxy route's name; a security count's main path). */
  route?: string
  /** 1–1,000; 100 by default. */
  limit?: number
  /** `asc` (oldest first, the default) or `desc` (newest first). */
  order?: 'asc' | 'desc'
}

/** One page of a query (data contract version 1). */
export interface AuditPage {
  readonly version: 1
  readonly trail: string
  readonly entries: readonly AuditRecord[]
  /** Pass it as `after` (asc) or `before` (desc) for the next page; `null`: there is none. */
  readonly next: number | null
}

/**
 * What the trail knows of itself (data contract version 1): what its store holds (entries in
 * all and by type, the first and last, bytes on disk or in Redis, checkpoints), and more.
 */
export interface AuditStats extends StoreStats {
  readonly version: 1
  readonly trail: string
  readonly store: 'memory' | 'sqlite' | 'redis'
  readonly writer: string
  /** Entries waiting to be written, dropped while the store failed, and failed writes. */
  readonly pending: number
  readonly dropped: number
  readonly writeFailures: number
  readonly sinkFailures: number
  /** Security counts of minutes not over yet. */
  readonly counting: number
}

/** What readers get: `aegis.audit`. */
export interface AuditTrail {
  /** Entries this process wrote, still held in memory, oldest first (flat). */
  entries(query?: Omit<AuditQuery, 'types'>): AuditEntry[]
  entries<T extends AuditType>(
    query: AuditQuery<T> & { types: readonly T[] },
  ): Extract<AuditEntry, { type: T }>[]
  /**
   * The `seq` of the oldest entry still held (`last + 1` when none is): a reader
   * whose last seen `seq` is below `first - 1` missed what fell out of the ring.
   */
  readonly first: number
  /** The `seq` of the newest entry (0 before the first). */
  readonly last: number
  /** How many entries the sink failed to take (threw or rejected); they stay in the ring. */
  readonly sinkFailures: number
  /** The trail's name (`audit.trail`). */
  readonly trail: string
  /** Where it is kept. */
  readonly store: 'memory' | 'sqlite' | 'redis'
  /** Search the store (every writer's entries, for a shared trail), a page at a time. */
  query(search?: AuditSearch): Promise<AuditPage>
  stats(): Promise<AuditStats>
  /**
   * Walk the chain the store keeps and name the first bad entry. Checkpoints are checked
   * with the configured keys, or with `keys` (an Ed25519 public key is enough).
   */
  verify(keys?: { secret?: string | Uint8Array; publicKey?: KeyObject }): Promise<AuditVerification>
  /** The checkpoints the store holds, oldest first. */
  checkpoints(): Promise<readonly AuditCheckpoint[]>
  /** Write what waits (not the security counts of the current minute); resolves when the store took it or failed. */
  flush(): Promise<void>
  /** Run retention now (it runs every `retention.interval` anyway); how many entries went. */
  prune(): Promise<number>
}

/** The trail with its writer, for the engines. */
export interface AuditLog extends AuditTrail {
  /** Record an event (a security event is counted in its minute). Never throws. */
  record(event: AuditEvent): void
  /** Count the current minute's security events, write what waits, stop the timers, close the store. */
  close(): Promise<void>
}

/** What the log is built with besides its options. */
export interface AuditDeps {
  readonly events?: EventBus | undefined
  /** The store option's connection (for `store: 'redis'`). */
  readonly store?: RedisConnection | undefined
  readonly logger?: Logger | undefined
}

const wholeNumber = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
const isSecurity = (type: string): type is SecurityType =>
  (SECURITY_EVENTS as readonly string[]).includes(type)

const MAX_PENDING = 10_000
const BATCH = 500
const PRUNE_BATCH = 5_000
/** A batch the store refused this many times in a row while it answers is dropped (counted): it will not go in. */
const MAX_ATTEMPTS = 10

const timeOf = (v: unknown, name: string): number => {
  if (v === undefined) return name === 'from' ? -Infinity : Infinity
  const t =
    v instanceof Date ? v.getTime() : typeof v === 'string' ? Date.parse(v) : typeof v === 'number' ? v : NaN
  if (!Number.isFinite(t))
    throw new AegisArgumentError(`audit query: ${name} must be a Date, ms since the epoch or ISO 8601 text`)
  return t
}
const optionalString = (v: unknown, name: string): string | undefined => {
  if (v === undefined) return undefined
  if (typeof v !== 'string') throw new AegisArgumentError(`audit query: ${name} must be a string`)
  return v
}

/** Check and resolve a search. */
function storeQuery(s: AuditSearch): StoreQuery {
  if (typeof s !== 'object' || s === null) throw new AegisArgumentError('audit query: expected an object')
  const { after = 0, before, limit = 100, order = 'asc', types } = s
  if (!wholeNumber(after)) throw new AegisArgumentError('audit query: after must be a whole number ≥ 0')
  if (before !== undefined && !wholeNumber(before))
    throw new AegisArgumentError('audit query: before must be a whole number ≥ 0')
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1_000)
    throw new AegisArgumentError('audit query: limit must be a whole number from 1 to 1000')
  if (order !== 'asc' && order !== 'desc')
    throw new AegisArgumentError("audit query: order must be 'asc' or 'desc'")
  if (types !== undefined && (!Array.isArray(types) || !types.every((t) => typeof t === 'string')))
    throw new AegisArgumentError('audit query: types must be an array of entry types')
  return {
    after,
    before: before ?? Infinity,
    from: timeOf(s.from, 'from'),
    to: timeOf(s.to, 'to'),
    types: types === undefined ? undefined : new Set(types),
    actor: optionalString(s.actor, 'actor'),
    client: optionalString(s.client, 'client'),
    route: optionalString(s.route, 'route'),
    limit,
    desc: order === 'desc',
  }
}

function openStore(config: AuditConfig, deps: AuditDeps): AuditStore {
  const { store } = config
  if (store === 'memory') return createMemoryStore(config.size)
  if (store === 'redis') {
    // The options schema refuses `'redis'` without a store option; an engine built by hand may not have one.
    if (deps.store === undefined)
      throw new AegisArgumentError("audit: store 'redis' needs the store option's connection")
    return createRedisStore(deps.store, config.trail)
  }
  return openSqliteStore(store.sqlite, config.trail)
}

/**
 * The instance's audit log; with `events`, it records every {@link AUDITED_EVENTS}
 * event the bus carries (for the instance's life: the bus lives no longer).
 *
 * @example
 * const audit = createAuditLog(auditSchema.parse({ size: 100 }), warn, { events: bus })
 * audit.record({ type: 'upstream.health', route: '/api', upstream: 'http://10.0.0.5:8080', healthy: false })
 * audit.entries({ after: 0, types: ['upstream.health'] })
 * await audit.verify() // { version: 1, ok: true, … }
 */
export function createAuditLog(config: AuditConfig, warn: Warn, deps: AuditDeps | EventBus = {}): AuditLog {
  // An event bus alone, as before the stores came.
  const { events, store: conn, logger } = 'emit' in deps ? ({ events: deps } as AuditDeps) : deps
  const store = openStore(config, { store: conn, logger })
  const writer = config.writer ?? `${hostname()}:${process.pid}`
  const { trail, sink } = config
  const keys: CheckpointKeys = { secret: config.checkpoint.secret, key: config.checkpoint.privateKey }
  const signs = keys.secret !== undefined || keys.key !== undefined

  // The newest `size` entries this process wrote, flat, in a ring.
  const ring = new Array<AuditEntry>(config.size)
  let held = 0
  let last = 0
  let sinkFailures = 0
  let writeFailures = 0
  let dropped = 0
  let closed = false

  /** Give the sink the entry; a failure is counted once per entry and never thrown back at the recorder. */
  const handOver = (entry: AuditEntry): void => {
    if (sink === undefined) return
    let counted = false
    const failed = (err: unknown): void => {
      if (counted) return
      counted = true
      sinkFailures++
      try {
        warn(
          WarningCodes.AUDIT_SINK_FAILED,
          `The audit sink failed at entry ${entry.seq} (${err instanceof Error ? err.message : String(err)}); entries stay readable through aegis.audit.entries(). Further failures are counted in aegis.audit.sinkFailures.`,
        )
      } catch {
        // A logger that throws must not take the state change down with it.
      }
    }
    try {
      const done = sink(entry) as PromiseLike<void> | undefined
      if (typeof done?.then === 'function') done.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  }

  // Checkpoints: after `every` entries, or at the first append (or retention run) `interval` ms after the last.
  let sinceCheckpoint = 0
  let checkpointedAt = Date.now()
  let lastLink: { seq: number; hash: string } | undefined
  const checkpoint = (force: boolean): void => {
    if (!signs || lastLink === undefined || sinceCheckpoint === 0) return
    if (
      !force &&
      sinceCheckpoint < config.checkpoint.every &&
      Date.now() - checkpointedAt < config.checkpoint.interval
    )
      return
    sinceCheckpoint = 0
    checkpointedAt = Date.now()
    try {
      const done = store.addCheckpoint(signCheckpoint(trail, lastLink, writer, keys))
      if (done instanceof Promise) done.catch((err: unknown) => storeFailed(err))
    } catch (err) {
      storeFailed(err)
    }
  }

  /** Records the store took: into the ring, to the sink, towards the next checkpoint. */
  const appended = (records: readonly AuditRecord[]): void => {
    for (const r of records) {
      const entry = Object.freeze({ type: r.type, ...r.data, seq: r.seq, time: r.time }) as AuditEntry
      ring[held++ % ring.length] = entry
      last = r.seq
      lastLink = { seq: r.seq, hash: r.hash }
      handOver(entry)
      // Every `every` records exactly, even inside one batch.
      if (++sinceCheckpoint >= config.checkpoint.every) checkpoint(true)
    }
    checkpoint(false)
  }

  // An outage is said once, when it starts, and once more when it ends.
  let failing = false
  const storeFailed = (err: unknown): void => {
    writeFailures++
    if (failing) return
    failing = true
    const message = `The audit store (${store.kind}) failed (${err instanceof Error ? err.message : String(err)}); entries wait in memory (at most ${MAX_PENDING}, the oldest dropped past that) and are retried. Failures are counted in aegis.audit.stats().`
    try {
      if (logger !== undefined)
        logger.warn({ code: WarningCodes.AUDIT_STORE_FAILED, store: store.kind }, message)
      else warn(WarningCodes.AUDIT_STORE_FAILED, message)
    } catch {
      // Never into the recorder.
    }
  }
  const storeBack = (): void => {
    if (!failing) return
    failing = false
    try {
      logger?.info({ store: store.kind, dropped }, 'The audit store is back: waiting entries written')
    } catch {
      // Never into the recorder.
    }
  }

  // Writes of the SQLite and Redis stores: a queue, batched after the current turn.
  const pending: AuditDraft[] = []
  let writing: Promise<void> | undefined
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined
  let attempts = 0

  const writeOnce = async (): Promise<boolean> => {
    if (conn !== undefined && store.kind === 'redis') {
      if (conn.starting) await conn.started
      if (!conn.up) {
        storeFailed(new Error('Redis is unavailable'))
        return false
      }
    }
    while (pending.length > 0) {
      const batch = pending.slice(0, BATCH)
      try {
        const records = await store.append(batch)
        pending.splice(0, batch.length)
        attempts = 0
        storeBack()
        appended(records)
      } catch (err) {
        if (store.kind === 'redis') conn?.fail(err)
        storeFailed(err)
        if (++attempts >= MAX_ATTEMPTS && (store.kind !== 'redis' || conn?.up === true)) {
          pending.splice(0, batch.length)
          dropped += batch.length
          attempts = 0
        }
        return false
      }
    }
    return true
  }
  const write = (): Promise<void> => {
    if (writing !== undefined) return writing
    if (timer !== undefined) {
      clearTimeout(timer as NodeJS.Timeout)
      clearImmediate(timer as NodeJS.Immediate)
      timer = undefined
    }
    writing = writeOnce().then(
      (ok) => {
        writing = undefined
        if (!ok && !closed) schedule(Math.min(100 * 2 ** Math.min(attempts, 6), 5_000))
        else if (pending.length > 0) schedule(0)
      },
      () => {
        writing = undefined
      },
    )
    return writing
  }
  const schedule = (delay: number): void => {
    if (timer !== undefined || writing !== undefined) return
    timer =
      delay === 0
        ? setImmediate(() => void ((timer = undefined), write()))
        : setTimeout(() => void ((timer = undefined), write()), delay)
    timer.unref()
  }

  const enqueue = (drafts: readonly AuditDraft[]): void => {
    if (drafts.length === 0) return
    if (store.kind === 'memory') {
      appended(store.append(drafts) as readonly AuditRecord[])
      return
    }
    pending.push(...drafts)
    // Past the bound, the oldest tenth goes at once (not one entry per record: a splice moves them all).
    if (pending.length > MAX_PENDING) dropped += pending.splice(0, pending.length - MAX_PENDING * 0.9).length
    schedule(0)
  }

  const draftOf = (type: string, data: unknown, now: number): AuditDraft =>
    deepFreeze({
      version: 1,
      time: new Date(now).toISOString(),
      type,
      writer,
      data: (toAuditData(data) ?? {}) as Record<string, unknown>,
    })

  // Security events: counted per minute; a timer writes each minute when it is over.
  const counts = createAggregator(config.security.maxClients)
  let minuteTimer: NodeJS.Timeout | undefined
  /** Write the minutes over by `until` (every one with `Infinity`), stamped now. */
  const closeMinutes = (until: number): void => {
    const done = counts.drain(until)
    const now = Date.now()
    if (done.length > 0) enqueue(done.map((d) => draftOf(d.type, d.data, now)))
  }
  const armMinute = (): void => {
    const end = counts.nextEnd
    if (minuteTimer !== undefined || end === undefined || closed) return
    minuteTimer = setTimeout(
      () => {
        minuteTimer = undefined
        closeMinutes(Date.now())
        armMinute()
      },
      Math.max(end - Date.now(), 0) + 50,
    )
    minuteTimer.unref()
  }

  // Retention, off the request path: one batch, then the next after a turn of the loop.
  let pruning: Promise<number> | undefined
  const pruneAll = (): Promise<number> => {
    pruning ??= (async () => {
      let total = 0
      try {
        const rule = {
          before: Date.now() - config.retention.maxAge,
          maxEntries:
            store.kind === 'memory'
              ? Math.min(config.retention.maxEntries, config.size)
              : config.retention.maxEntries,
          maxBytes: config.retention.maxBytes,
          batch: PRUNE_BATCH,
        }
        for (;;) {
          const n = await store.prune(rule)
          total += n
          if (n < PRUNE_BATCH || closed) break
          await new Promise((resolve) => setImmediate(resolve))
        }
      } catch (err) {
        storeFailed(err)
      } finally {
        pruning = undefined
      }
      return total
    })()
    return pruning
  }
  const retention = setInterval(() => {
    checkpoint(false)
    void pruneAll()
  }, config.retention.interval)
  retention.unref()

  function entries<T extends AuditType>({
    after = 0,
    types,
    limit = Infinity,
  }: AuditQuery<T> = {}): AuditEntry[] {
    if (!wholeNumber(after)) throw new AegisArgumentError('audit entries: after must be a whole number ≥ 0')
    if (limit !== Infinity && !wholeNumber(limit))
      throw new AegisArgumentError('audit entries: limit must be a whole number ≥ 0')
    if (types !== undefined && !Array.isArray(types))
      throw new AegisArgumentError('audit entries: types must be an array of entry types')
    const out: AuditEntry[] = []
    for (let i = Math.max(held - ring.length, 0); i < held && out.length < limit; i++) {
      const entry = ring[i % ring.length] as AuditEntry
      if (entry.seq <= after) continue
      if (types === undefined || (types as readonly AuditType[]).includes(entry.type)) out.push(entry)
    }
    return out
  }

  /** What was recorded is in the store before a read (SQLite answers at once; Redis as soon as it can). */
  const settle = async (): Promise<void> => {
    if (pending.length > 0 || writing !== undefined) await write()
  }

  const log: AuditLog = {
    record(event) {
      if (closed) return
      try {
        const now = Date.now()
        if (isSecurity(event.type)) {
          closeMinutes(now)
          counts.add(event as TypedEvent<SecurityType>, now)
          armMinute()
          return
        }
        const { type, ...data } = event as { type: string }
        enqueue([draftOf(type, data, now)])
      } catch (err) {
        storeFailed(err)
      }
    },
    entries,
    get first() {
      const oldest = held === 0 ? undefined : ring[Math.max(held - ring.length, 0) % ring.length]
      return oldest === undefined ? last + 1 : oldest.seq
    },
    get last() {
      return last
    },
    get sinkFailures() {
      return sinkFailures
    },
    trail,
    store: store.kind,
    async query(search = {}) {
      const q = storeQuery(search)
      await settle()
      const page = await store.search(q)
      return { version: 1, trail, entries: page.records, next: page.next }
    },
    async stats() {
      await settle()
      const s = await store.stats()
      return {
        version: 1,
        trail,
        store: store.kind,
        writer,
        ...s,
        pending: pending.length,
        dropped,
        writeFailures,
        sinkFailures,
        counting: counts.size,
      }
    },
    async verify(given) {
      await settle()
      const use: CheckpointKeys = given === undefined ? keys : { secret: given.secret, key: given.publicKey }
      return verifyChain(trail, store, use)
    },
    async checkpoints() {
      return [...(await store.checkpoints())].sort((a, b) => a.seq - b.seq)
    },
    flush: settle,
    prune: pruneAll,
    async close() {
      if (closed) return
      try {
        closeMinutes(Infinity)
      } catch (err) {
        storeFailed(err)
      }
      closed = true
      clearInterval(retention)
      clearTimeout(minuteTimer)
      await settle()
      checkpoint(true)
      await pruning
      await store.close()
    },
  }
  if (events !== undefined)
    for (const type of AUDITED_EVENTS)
      events.on(type, (event) => log.record({ type, ...event } as AuditEvent))
  return log
}
