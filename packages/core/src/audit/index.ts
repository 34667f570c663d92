/**
 * The audit trail: the changes in this instance's view of its upstreams
 * (breaker, health, ejection) and the fault injection switched at run time, in
 * the order they happened. Entries are rare — state changes, not requests — so
 * each is kept whole: numbered, timestamped, frozen, in a bounded ring that
 * `entries()` reads (an admin API pages through it by `seq`), and handed to the
 * configured sink as it is recorded. Given the instance's event bus, the log
 * subscribes to the {@link AUDITED_EVENTS} itself: engines emit, they do not
 * know the trail.
 */
import { AegisArgumentError, WarningCodes } from '../kernel/errors.js'
import type { AegisEventType, EventBus, TypedEvent } from '../kernel/events.js'
import { deepFreeze } from '../kernel/option-helpers.js'
import type { Warn } from '../kernel/warnings.js'
import type { AuditConfig } from './options.js'

export { auditSchema, auditSection } from './options.js'
export type { AuditConfig, AuditOptions, AuditSink } from './options.js'

/**
 * The event types the trail records, as the engines declared them on the bus
 * (`AegisEvents`, by declaration merging: the gateway's in gateway/events.ts).
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
  'config.reloaded',
  'config.refused',
] as const satisfies readonly AegisEventType[]

/**
 * What happened: one of the {@link AUDITED_EVENTS}, with its type, exactly as the bus
 * carries it. `origin: 'peer'` (a breaker): applied from another instance (`breaker.shared`).
 */
export type AuditEvent = TypedEvent<(typeof AUDITED_EVENTS)[number]>

export type AuditType = AuditEvent['type']

/** One recorded event: `seq` counts from 1 in each process with no gaps; `time` is ISO 8601. */
export type AuditEntry = AuditEvent & { readonly seq: number; readonly time: string }

export interface AuditQuery<T extends AuditType = AuditType> {
  /** Only entries with a larger `seq` (the last one a reader saw); a whole number ≥ 0. */
  after?: number
  /** Only these types. */
  types?: readonly T[]
  /** At most this many (the oldest matching ones); a whole number ≥ 0. */
  limit?: number
}

/** What readers get: `aegis.audit`. */
export interface AuditTrail {
  /** Entries still held, oldest first. */
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
}

/** The trail with its writer, for the engines. */
export interface AuditLog extends AuditTrail {
  /** Record an event: numbered, timestamped, kept, handed to the sink. Returns the entry. */
  record(event: AuditEvent): AuditEntry
}

const wholeNumber = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

/**
 * The instance's audit log; with `events`, it records every {@link AUDITED_EVENTS}
 * event the bus carries (for the instance's life: the bus lives no longer).
 *
 * @example
 * const audit = createAuditLog(auditSchema.parse({ size: 100 }), warn, bus)
 * audit.record({ type: 'upstream.health', route: '/api', upstream: 'http://10.0.0.5:8080', healthy: false })
 * audit.entries({ after: 0, types: ['upstream.health'] })
 */
export function createAuditLog(config: AuditConfig, warn: Warn, events?: EventBus): AuditLog {
  const ring = new Array<AuditEntry>(config.size)
  let last = 0
  let sinkFailures = 0
  const { sink } = config
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
    for (let seq = Math.max(after + 1, last - ring.length + 1); seq <= last && out.length < limit; seq++) {
      const entry = ring[(seq - 1) % ring.length] as AuditEntry
      if (types === undefined || (types as readonly AuditType[]).includes(entry.type)) out.push(entry)
    }
    return out
  }

  const log: AuditLog = {
    record(event) {
      const seq = last + 1
      // A frozen copy: neither the recorder's later changes nor a reader's reach the trail.
      const entry = deepFreeze(structuredClone({ ...event, seq, time: new Date().toISOString() }))
      ring[(seq - 1) % ring.length] = entry
      last = seq
      handOver(entry)
      return entry
    },
    entries,
    get first() {
      return Math.max(last - ring.length, 0) + 1
    },
    get last() {
      return last
    },
    get sinkFailures() {
      return sinkFailures
    },
  }
  if (events !== undefined)
    for (const type of AUDITED_EVENTS)
      events.on(type, (event) => log.record({ type, ...event } as AuditEvent))
  return log
}
