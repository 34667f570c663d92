/**
 * The reload's events on the bus (declaration merging on AegisEvents), which the audit
 * trail records: a configuration applied, or one refused with its errors.
 */
import type { ConfigIssue } from '../kernel/errors.js'
import type { PatchOperation } from './diff.js'

/** Who asked for a reload: the admin API, a watched file, SIGHUP, or the application's code. */
export type ReloadSource = 'api' | 'file' | 'signal' | 'code'

declare module '../kernel/events.js' {
  interface AegisEvents {
    /** A new configuration is in force. */
    'config.reloaded': {
      /** The generation now in force. */
      readonly generation: number
      readonly source: ReloadSource
      /** The token's name (admin API), or what the caller said. */
      readonly actor?: string
      /** The watched file, for `source: 'file'` and `'signal'`. */
      readonly file?: string
      /** Content hashes of the configuration before and after (`configHash`). */
      readonly before: string
      readonly after: string
      /** RFC 6902 from the old configuration to the new, secrets redacted. */
      readonly diff: readonly PatchOperation[]
      /** Engines kept with their state, built anew, updated in place, and closed. */
      readonly engines: {
        readonly kept: readonly string[]
        readonly built: readonly string[]
        readonly updated: readonly string[]
        readonly closed: readonly string[]
      }
    }
    /** A configuration was refused: the one in force (`generation`) keeps running. */
    'config.refused': {
      readonly generation: number
      readonly source: ReloadSource
      readonly actor?: string
      readonly file?: string
      /** What is wrong, by path (`limiter.limit`, `store`). */
      readonly errors: readonly Pick<ConfigIssue, 'path' | 'message'>[]
    }
  }
}
