import { z } from 'zod'
import { fn, section } from '../kernel/option-helpers.js'
import type { AuditEntry } from './index.js'

/** Where each entry goes as it is recorded; a promise it returns is not awaited, a rejection is logged. */
export type AuditSink = (entry: AuditEntry) => void | Promise<void>

/** The audit trail: what changed in the instance's view of the world, kept in memory and handed to a sink. */
export const auditSchema = z.strictObject({
  /** How many entries stay readable through `aegis.audit.entries()`; older ones fall out first. */
  size: z.int().min(1).max(1_000_000).default(1_000),
  /** Also hand every entry to this function (ship it to a SIEM, a file, a database). */
  sink: fn<AuditSink>('(entry) => void').optional(),
})

export const auditSection = section(auditSchema)
export type AuditOptions = z.input<typeof auditSchema>
export type AuditConfig = z.output<typeof auditSchema>
