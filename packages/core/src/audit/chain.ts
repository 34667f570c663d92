/**
 * The hash chain and its checkpoints (the shape of CloudTrail's digest chain, in one
 * trail). Each record's `hash` is SHA-256 over the previous record's hash and the
 * canonical text of the record itself:
 *
 *   hash = sha256_hex(prev + "\n" + canonicalJson(record without `hash`))
 *
 * so changing, removing or inserting a record breaks every link after it. The first
 * record's `prev` is 64 zeros; after retention removed the oldest records, the chain
 * starts at the anchor the store kept (the last removed record's seq and hash).
 *
 * A checkpoint signs one link (trail, seq, hash, time) with the operator's key:
 * HMAC-SHA-256 under a secret, and/or Ed25519 (whose public key alone verifies).
 * Rewriting the records from some point on and recomputing every hash is caught by the
 * first checkpoint after that point, which nobody without the key can re-sign.
 */
import {
  createHash,
  createHmac,
  createPublicKey,
  sign,
  timingSafeEqual,
  verify,
  type KeyObject,
} from 'node:crypto'
import { canonicalJson } from './redact.js'

/** The version of the data shapes below (records, checkpoints, pages, stats, verification). */
export const AUDIT_VERSION = 1

/** The `prev` of the first record of a trail. */
export const GENESIS = '0'.repeat(64)

/** A record before a store numbers and chains it. */
export interface AuditDraft {
  readonly version: 1
  /** ISO 8601, milliseconds, UTC. */
  readonly time: string
  readonly type: string
  /** Who wrote it (`audit.writer`: host name and process id by default). */
  readonly writer: string
  /** The event's fields (without `type`), as plain redacted JSON. */
  readonly data: Readonly<Record<string, unknown>>
}

/**
 * One record of a trail, as every store keeps it and every query returns it (data
 * contract version 1). `seq` counts from 1 per trail, with no gaps; `prev` is the
 * previous record's `hash`.
 */
export interface AuditRecord extends AuditDraft {
  readonly seq: number
  readonly prev: string
  readonly hash: string
}

/** Where a chain stands: its last record's seq and hash (0 and {@link GENESIS} before the first). */
export interface ChainLink {
  readonly seq: number
  readonly hash: string
}

/** A signed link of the chain (data contract version 1). */
export interface AuditCheckpoint {
  readonly version: 1
  readonly trail: string
  readonly seq: number
  readonly hash: string
  readonly time: string
  readonly writer: string
  /** Base64url signatures over the canonical text of the fields above. */
  readonly signatures: { readonly 'hmac-sha256'?: string; readonly ed25519?: string }
}

/** The keys checkpoints are signed or verified with. */
export interface CheckpointKeys {
  readonly secret?: string | Uint8Array | undefined
  /** Ed25519: a private key signs (and its public half verifies); a public key only verifies. */
  readonly key?: KeyObject | undefined
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

/** The hash of a record: over its previous hash and its canonical text, without its own hash. */
export function hashOf(record: Omit<AuditRecord, 'hash'> & { hash?: unknown }): string {
  const rest: Record<string, unknown> = { ...record }
  delete rest.hash
  return sha256(`${record.prev}\n${canonicalJson(rest)}`)
}

/** Number and chain drafts after `head`: the records a store then writes. */
export function seal(head: ChainLink, drafts: readonly AuditDraft[]): AuditRecord[] {
  const out: AuditRecord[] = []
  let { seq, hash } = head
  for (const draft of drafts) {
    seq++
    const partial = {
      version: draft.version,
      seq,
      time: draft.time,
      type: draft.type,
      writer: draft.writer,
      data: draft.data,
      prev: hash,
    }
    hash = hashOf(partial)
    out.push(Object.freeze({ ...partial, hash }))
  }
  return out
}

const signedText = (c: Omit<AuditCheckpoint, 'signatures'>): string =>
  canonicalJson({
    version: c.version,
    trail: c.trail,
    seq: c.seq,
    hash: c.hash,
    time: c.time,
    writer: c.writer,
  })

/** A checkpoint of `link`, signed with whichever keys are given. */
export function signCheckpoint(
  trail: string,
  link: ChainLink,
  writer: string,
  keys: CheckpointKeys,
  time = new Date().toISOString(),
): AuditCheckpoint {
  const body = { version: 1 as const, trail, seq: link.seq, hash: link.hash, time, writer }
  const text = signedText(body)
  const signatures: { 'hmac-sha256'?: string; ed25519?: string } = {}
  if (keys.secret !== undefined)
    signatures['hmac-sha256'] = createHmac('sha256', keys.secret).update(text).digest('base64url')
  if (keys.key?.type === 'private')
    signatures.ed25519 = sign(null, Buffer.from(text), keys.key).toString('base64url')
  return Object.freeze({ ...body, signatures: Object.freeze(signatures) })
}

/** Whether a checkpoint's signatures hold under `keys`: `unchecked` when no key can check any. */
export function checkSignatures(c: AuditCheckpoint, keys: CheckpointKeys): 'ok' | 'bad' | 'unchecked' {
  const text = signedText(c)
  let checked = false
  const hmac = c.signatures['hmac-sha256']
  if (keys.secret !== undefined) {
    if (typeof hmac !== 'string') return 'bad'
    const expected = createHmac('sha256', keys.secret).update(text).digest()
    const given = Buffer.from(hmac, 'base64url')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'bad'
    checked = true
  }
  if (keys.key !== undefined) {
    const signature = c.signatures.ed25519
    if (typeof signature !== 'string') return 'bad'
    const publicKey = keys.key.type === 'private' ? createPublicKey(keys.key) : keys.key
    if (!verify(null, Buffer.from(text), publicKey, Buffer.from(signature, 'base64url'))) return 'bad'
    checked = true
  }
  return checked ? 'ok' : 'unchecked'
}

/** Why verification stopped at a record or a checkpoint. */
export type AuditFault =
  /** The record's content does not give its stored hash: it was changed. */
  | 'hash-mismatch'
  /** The record's `prev` is not the hash of the record before it: one was changed or replaced. */
  | 'prev-mismatch'
  /** A seq is absent: a record was removed (or the trail was cut after a checkpoint). */
  | 'missing'
  /** The stored record is not a record (unreadable JSON, a field of the wrong type, columns that disagree). */
  | 'malformed'
  /** A checkpoint's signature does not hold under the keys given. */
  | 'bad-signature'
  /** A checkpoint's hash is not the chain's at its seq: the records before it were rewritten. */
  | 'checkpoint-mismatch'

/** What `verify()` says (data contract version 1). */
export type AuditVerification =
  | {
      readonly version: 1
      readonly ok: true
      readonly trail: string
      /** The oldest and newest seq checked (first > last: the trail is empty). */
      readonly first: number
      readonly last: number
      readonly entries: number
      readonly checkpoints: number
      /** `checked`: every checkpoint's signature held; `unchecked`: no key to check them with. */
      readonly signatures: 'checked' | 'unchecked' | 'none'
      readonly ms: number
    }
  | {
      readonly version: 1
      readonly ok: false
      readonly trail: string
      /** The first bad record's seq (or the checkpoint's). */
      readonly seq: number
      readonly reason: AuditFault
      readonly message: string
      /** Records checked before the fault. */
      readonly entries: number
      readonly ms: number
    }

/** A stored row as verification reads it: the record, or why it is not one. */
export type StoredRecord = {
  readonly seq: number
  readonly record: AuditRecord | undefined
  readonly why?: string
}

const isRecord = (r: unknown): r is AuditRecord => {
  if (typeof r !== 'object' || r === null) return false
  const o = r as Record<string, unknown>
  return (
    o.version === 1 &&
    Number.isSafeInteger(o.seq) &&
    typeof o.time === 'string' &&
    typeof o.type === 'string' &&
    typeof o.writer === 'string' &&
    typeof o.data === 'object' &&
    o.data !== null &&
    typeof o.prev === 'string' &&
    typeof o.hash === 'string'
  )
}

/** Parse a stored record's text: the record, or `undefined` when it is none. */
export function parseRecord(text: string): AuditRecord | undefined {
  try {
    const r = JSON.parse(text) as unknown
    return isRecord(r) ? r : undefined
  } catch {
    return undefined
  }
}

/** What verification reads from a store. */
export interface ChainSource {
  /** Where the kept chain starts (the last removed record's link, or seq 0 and {@link GENESIS}). */
  anchor(): ChainLink | Promise<ChainLink>
  /** The head the store says it has written up to (to catch a cut tail). */
  head(): ChainLink | Promise<ChainLink>
  /** Stored rows with seq > `after`, ascending, at most `limit`. */
  rows(after: number, limit: number): readonly StoredRecord[] | Promise<readonly StoredRecord[]>
  checkpoints(): readonly AuditCheckpoint[] | Promise<readonly AuditCheckpoint[]>
}

const PAGE = 2_000

/**
 * Walk the kept chain from its anchor: every seq present, every `prev` the hash before,
 * every hash recomputed, every checkpoint in range signed and on the chain. Stops at
 * the first fault, naming the record.
 */
export async function verifyChain(
  trail: string,
  source: ChainSource,
  keys: CheckpointKeys,
): Promise<AuditVerification> {
  const started = performance.now()
  const ms = (): number => Math.round((performance.now() - started) * 10) / 10
  const anchor = await source.anchor()
  const head = await source.head()
  const checkpoints = [...(await source.checkpoints())]
    .filter((c) => c.seq >= anchor.seq && c.seq > 0)
    .sort((a, b) => a.seq - b.seq)
  let entries = 0
  const fault = (seq: number, reason: AuditFault, message: string): AuditVerification => ({
    version: 1,
    ok: false,
    trail,
    seq,
    reason,
    message,
    entries,
    ms: ms(),
  })

  let signatures: 'checked' | 'unchecked' | 'none' = checkpoints.length === 0 ? 'none' : 'checked'
  for (const c of checkpoints) {
    const state = checkSignatures(c, keys)
    if (state === 'bad')
      return fault(c.seq, 'bad-signature', `the checkpoint at seq ${c.seq} is not signed by the key given`)
    if (state === 'unchecked') signatures = 'unchecked'
  }
  const byseq = new Map(checkpoints.map((c) => [c.seq, c]))
  const atAnchor = byseq.get(anchor.seq)
  if (atAnchor !== undefined && atAnchor.hash !== anchor.hash)
    return fault(
      anchor.seq,
      'checkpoint-mismatch',
      `the kept chain's anchor (seq ${anchor.seq}) is not the one the checkpoint signed`,
    )

  let expected = anchor.seq + 1
  let prev = anchor.hash
  let after = anchor.seq
  for (;;) {
    const rows = await source.rows(after, PAGE)
    for (const row of rows) {
      if (row.seq !== expected)
        return fault(
          expected,
          'missing',
          `seq ${expected} is missing (the next stored record is seq ${row.seq})`,
        )
      const r = row.record
      if (r === undefined || r.seq !== row.seq)
        return fault(
          row.seq,
          'malformed',
          `seq ${row.seq}: ${row.why ?? 'the stored record is not a version 1 record'}`,
        )
      if (r.prev !== prev)
        return fault(r.seq, 'prev-mismatch', `seq ${r.seq} does not follow the hash of seq ${r.seq - 1}`)
      const hash = hashOf(r)
      if (hash !== r.hash)
        return fault(r.seq, 'hash-mismatch', `seq ${r.seq}: its content does not give its hash`)
      const c = byseq.get(r.seq)
      if (c !== undefined && c.hash !== hash)
        return fault(r.seq, 'checkpoint-mismatch', `seq ${r.seq} is not the record the checkpoint signed`)
      prev = hash
      expected++
      entries++
    }
    if (rows.length < PAGE) break
    after = (rows[rows.length - 1] as StoredRecord).seq
  }
  const last = expected - 1
  const lastCheckpoint = checkpoints[checkpoints.length - 1]
  const signedUpTo = lastCheckpoint?.seq ?? 0
  if (signedUpTo > last || head.seq > last)
    return fault(
      last + 1,
      'missing',
      `seq ${last + 1} to ${Math.max(signedUpTo, head.seq)} are missing (the trail was cut)`,
    )
  if (head.seq === last && head.seq > anchor.seq && head.hash !== prev)
    return fault(last, 'hash-mismatch', `seq ${last} is not the record the trail's head names`)
  return {
    version: 1,
    ok: true,
    trail,
    first: anchor.seq + 1,
    last,
    entries,
    checkpoints: checkpoints.length,
    signatures,
    ms: ms(),
  }
}
