import { createPrivateKey, KeyObject } from 'node:crypto'
import { z } from 'zod'
import { fn, section } from '../kernel/option-helpers.js'
import type { AuditEntry } from './index.js'

/** Where each entry goes as it is recorded; a promise it returns is not awaited, a rejection is logged. */
export type AuditSink = (entry: AuditEntry) => void | Promise<void>

const DAY = 86_400_000

/** An Ed25519 private key: a `KeyObject`, or its PEM text (PKCS #8). */
const ed25519PrivateKey = z
  .custom<KeyObject | string>((v) => v instanceof KeyObject || typeof v === 'string', {
    message: 'expected an Ed25519 private key (a KeyObject, or PEM text)',
  })
  .transform((v, ctx) => {
    try {
      const key = typeof v === 'string' ? createPrivateKey(v) : v
      if (key.type === 'private' && key.asymmetricKeyType === 'ed25519') return key
    } catch {
      // Reported below, without the text.
    }
    ctx.addIssue({ code: 'custom', message: 'expected an Ed25519 private key (a KeyObject, or PEM text)' })
    return z.NEVER
  })

/** The HMAC secret: at least 32 bytes (the SHA-256 block it keys is 64; fewer bytes are guessable faster). */
const hmacSecret = z
  .custom<string | Uint8Array>((v) => typeof v === 'string' || v instanceof Uint8Array, {
    message: 'expected a string or bytes of at least 32 bytes',
  })
  .refine((v) => (typeof v === 'string' ? Buffer.byteLength(v) : v.byteLength) >= 32, {
    message: 'expected at least 32 bytes',
  })

/**
 * The audit trail: what changed in the instance's view of the world (upstream state,
 * fault injection, admin actions) and the security events of each minute, chained by
 * hashes and kept in memory, in SQLite or in a Redis stream.
 */
export const auditSchema = z.strictObject({
  /** How many entries stay readable through `aegis.audit.entries()`; older ones fall out first. */
  size: z.int().min(1).max(1_000_000).default(1_000),
  /** Also hand every entry to this function (ship it to a SIEM, a file, a database). */
  sink: fn<AuditSink>('(entry) => void').optional(),
  /**
   * Where the trail is kept: `'memory'` (the newest `size` entries of this process),
   * `{ sqlite: path }` (a file, through the optional peer dependency better-sqlite3) or
   * `'redis'` (a stream on the `store` option's Redis or Cluster, shared by every instance).
   */
  store: z
    .union([z.enum(['memory', 'redis']), z.strictObject({ sqlite: z.string().min(1) })])
    .default('memory'),
  /** The trail's name: instances that write to one Redis stream or one SQLite file share a chain. */
  trail: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1 to 64 letters, digits, dots, dashes or underscores')
    .default('main'),
  /** Who writes (each entry's `writer`): the host name and process id unless set. */
  writer: z.string().min(1).max(128).optional(),
  retention: z
    .strictObject({
      /** Entries older than this many ms are removed. */
      maxAge: z
        .int()
        .min(60_000)
        .max(3650 * DAY)
        .default(90 * DAY),
      /** At most this many entries are kept (memory: `size` at most). */
      maxEntries: z.int().min(1).max(1_000_000_000).default(1_000_000),
      /** At most about this many bytes (SQLite: the file's used pages; Redis: the stream's memory). */
      maxBytes: z.int().min(65_536).optional(),
      /** How often retention runs, in ms (off the request path, in batches). */
      interval: z.int().min(1_000).max(DAY).default(60_000),
    })
    .prefault({}),
  checkpoint: z
    .strictObject({
      /** A checkpoint after this many entries … */
      every: z.int().min(1).max(10_000_000).default(1_000),
      /** … or this many ms after the last one, whichever comes first (when entries were added). */
      interval: z
        .int()
        .min(1_000)
        .max(30 * DAY)
        .default(3_600_000),
      /** Sign checkpoints with HMAC-SHA-256 under this secret (verification needs the same secret). */
      secret: hmacSecret.optional(),
      /** Sign checkpoints with this Ed25519 key (verification needs only its public key). */
      privateKey: ed25519PrivateKey.optional(),
    })
    .prefault({}),
  security: z
    .strictObject({
      /**
       * Security events (limiter blocks, anomaly blocks) are counted per minute, client and
       * reason: one entry each. At most this many clients a minute get their own; the rest
       * are counted together under client `*`.
       */
      maxClients: z.int().min(1).max(1_000_000).default(1_000),
    })
    .prefault({}),
})

export const auditSection = section(auditSchema)
export type AuditOptions = z.input<typeof auditSchema>
export type AuditConfig = z.output<typeof auditSchema>
