/**
 * The audit trail: every change in what this instance believes about its
 * upstreams (breaker, health, ejection) and every change an operator makes at
 * run time (fault injection), in the order they happened. Entries are rare —
 * state changes, not requests — so each is kept whole: numbered, timestamped,
 * frozen, in a bounded ring that `entries()` reads (an admin API pages through
 * it by `seq`), and handed to the configured sink as it is recorded.
 */
import { WarningCodes } from '../errors.js'
import type { Warn } from '../warnings.js'
import type { AuditConfig } from './options.js'

export { auditSchema, auditSection } from './options.js'
export type { AuditConfig, AuditOptions, AuditSink } from './options.js'

/** What happened. `origin: 'peer'`: applied from another instance (`breaker.shared`). */
export type AuditEvent =
  | {
      readonly type: 'upstream.breaker'
      readonly route: string
      readonly upstream: string
      readonly state: 'open' | 'half-open' | 'closed'
      readonly origin: 'local' | 'peer'
    }
  | {
      readonly type: 'upstream.health'
      readonly route: string
      readonly upstream: string
      readonly healthy: boolean
    }
  | {
      readonly type: 'upstream.ejected'
      readonly route: string
      readonly upstream: string
      readonly ms: number
    }
  | {
      readonly type: 'proxy.chaos'
      readonly route: string
      /** The fault injection now in force (`false`: off), as parsed. */
      readonly chaos: unknown
    }

export type AuditType = AuditEvent['type']

/** One recorded event: `seq` counts from 1 per instance with no gaps; `time` is ISO 8601. */
export type AuditEntry = AuditEvent & { readonly seq: number; readonly time: string }

export interface AuditQuery<T extends AuditType = AuditType> {
  /** Only entries with a larger `seq` (the last one a reader saw). */
  after?: number
  /** Only these types. */
  types?: readonly T[]
  /** At most this many (the oldest matching ones). */
  limit?: number
}

export interface AuditLog {
  /** Record an event: numbered, timestamped, kept, handed to the sink. Returns the entry. */
  record(event: AuditEvent): AuditEntry
  /** Entries still held, oldest first. A gap between `after` and the first `seq` is what fell out. */
  entries<T extends AuditType = AuditType>(query?: AuditQuery<T>): Extract<AuditEntry, { type: T }>[]
  /** The `seq` of the newest entry (0 before the first). */
  readonly last: number
  /** How many times the sink threw or rejected (the entries stay in the ring). */
  readonly sinkFailures: number
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/**
 * The instance's audit log.
 *
 * @example
 * const audit = createAuditLog(auditSchema.parse({ size: 100 }), warn)
 * audit.record({ type: 'upstream.health', route: '/api', upstream: 'http://10.0.0.5:8080', healthy: false })
 * audit.entries({ after: 0, types: ['upstream.health'] })
 */
export function createAuditLog(config: AuditConfig, warn: Warn): AuditLog {
  const ring: (AuditEntry | undefined)[] = new Array<AuditEntry | undefined>(config.size)
  let last = 0
  let sinkFailures = 0
  const failed = (err: unknown): void => {
    sinkFailures++
    warn(
      WarningCodes.AUDIT_SINK_FAILED,
      `The audit sink failed (${err instanceof Error ? err.message : String(err)}); entries stay readable through aegis.audit.entries(). Further failures are counted in aegis.audit.sinkFailures.`,
    )
  }
  const { sink } = config

  return {
    record(event) {
      // A copy, frozen: neither the recorder's later changes nor a reader's reach the trail.
      const entry = deepFreeze(structuredClone({ seq: ++last, time: new Date().toISOString(), ...event }))
      ring[(entry.seq - 1) % ring.length] = entry
      if (sink !== undefined) {
        try {
          const done = sink(entry) as PromiseLike<void> | undefined
          if (typeof done?.then === 'function') done.then(undefined, failed)
        } catch (err) {
          failed(err)
        }
      }
      return entry
    },
    entries<T extends AuditType>({ after = 0, types, limit = Infinity }: AuditQuery<T> = {}) {
      const out: Extract<AuditEntry, { type: T }>[] = []
      const first = Math.max(after + 1, last - ring.length + 1, 1)
      for (let seq = first; seq <= last && out.length < limit; seq++) {
        const entry = ring[(seq - 1) % ring.length] as AuditEntry
        if (types === undefined || (types as readonly AuditType[]).includes(entry.type))
          out.push(entry as Extract<AuditEntry, { type: T }>)
      }
      return out
    },
    get last() {
      return last
    },
    get sinkFailures() {
      return sinkFailures
    },
  }
}
