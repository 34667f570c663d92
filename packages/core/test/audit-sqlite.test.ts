/**
 * The SQLite audit store on a real temp file: what an attacker with write access to the
 * file does (changes a row, deletes one, rewrites the tail with fresh hashes) is named by
 * `verify`; a restart goes on with the chain; retention by age (a fake clock) and by size.
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { auditSchema, createAuditLog, type AuditLog, type AuditOptions } from '../src/audit/index.js'
import { hashOf, type AuditRecord } from '../src/audit/chain.js'
import { AegisConfigError, createAegis } from '../src/index.js'
import { createWarnOnce } from '../src/kernel/warnings.js'
import { sqliteLoads } from './audit-helpers.js'

const warn = createWarnOnce({ info: () => undefined, warn: () => undefined, error: () => undefined })
const dir = mkdtempSync(join(tmpdir(), 'aegis-audit-sqlite-'))
const logs: AuditLog[] = []
afterEach(async () => {
  vi.useRealTimers()
  await Promise.all(logs.splice(0).map((l) => l.close()))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const secret = 'an HMAC secret of at least thirty-two bytes'
const open = (file: string, options: AuditOptions = {}): AuditLog => {
  const log = createAuditLog(auditSchema.parse({ ...options, store: { sqlite: file } }), warn)
  logs.push(log)
  return log
}
const health = (i: number) =>
  ({
    type: 'upstream.health',
    route: 'api',
    upstream: `http://10.0.0.${i}:8080`,
    healthy: i % 2 === 0,
  }) as const
const fill = async (log: AuditLog, n: number, from = 0): Promise<void> => {
  for (let i = from; i < from + n; i++) log.record(health(i))
  await log.flush()
}
/** A second connection to the file, as an attacker (or a careless operator) would open it. */
const tamper = <T>(file: string, change: (db: Database.Database) => T): T => {
  const db = new Database(file)
  try {
    return change(db)
  } finally {
    db.close()
  }
}

describe.skipIf(!sqliteLoads)('audit trail in SQLite', () => {
  it('names a row changed through another connection', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const log = open(file)
    await fill(log, 20)
    expect(await log.verify()).toMatchObject({ ok: true, entries: 20 })
    tamper(file, (db) =>
      db
        .prepare(
          'UPDATE audit_entries SET record = replace(record, \'"healthy":false\', \'"healthy":true\') WHERE seq = 8',
        )
        .run(),
    )
    expect(await log.verify()).toMatchObject({ ok: false, seq: 8, reason: 'hash-mismatch', entries: 7 })
  })

  it('names a row whose query columns were changed, a deleted row, and a cut tail', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const log = open(file)
    await fill(log, 20)
    tamper(file, (db) => db.prepare("UPDATE audit_entries SET route = 'other' WHERE seq = 5").run())
    expect(await log.verify()).toMatchObject({ ok: false, seq: 5, reason: 'malformed' })
    tamper(file, (db) => db.prepare("UPDATE audit_entries SET route = 'api' WHERE seq = 5").run())
    expect(await log.verify()).toMatchObject({ ok: true })

    tamper(file, (db) => db.prepare('DELETE FROM audit_entries WHERE seq = 12').run())
    expect(await log.verify()).toMatchObject({ ok: false, seq: 12, reason: 'missing', entries: 11 })

    const file2 = join(dir, `${randomUUID()}.db`)
    const log2 = open(file2)
    await fill(log2, 10)
    tamper(file2, (db) => db.prepare('DELETE FROM audit_entries WHERE seq > 8').run())
    expect(await log2.verify()).toMatchObject({ ok: false, seq: 9, reason: 'missing' })
  })

  it('catches a tail rewritten with fresh hashes at the next signed checkpoint', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const log = open(file, { checkpoint: { every: 10, secret } })
    await fill(log, 25)
    // Change seq 14 and recompute every hash after it, as someone who knows the scheme would.
    tamper(file, (db) => {
      const rows = db.prepare('SELECT seq, record FROM audit_entries WHERE seq >= 14 ORDER BY seq').all() as {
        seq: number
        record: string
      }[]
      let prev = (JSON.parse(rows[0]?.record ?? '{}') as AuditRecord).prev
      for (const row of rows) {
        const r = JSON.parse(row.record) as AuditRecord & { data: { healthy: boolean } }
        if (r.seq === 14) r.data.healthy = !r.data.healthy
        const rewritten = { ...r, prev }
        const hash = hashOf(rewritten)
        prev = hash
        db.prepare('UPDATE audit_entries SET record = ? WHERE seq = ?').run(
          JSON.stringify({ ...rewritten, hash }),
          r.seq,
        )
      }
      db.prepare("UPDATE audit_meta SET value = ? WHERE key = 'head_hash'").run(prev)
    })
    expect(await log.verify()).toMatchObject({ ok: false, seq: 20, reason: 'checkpoint-mismatch' })
  })

  it('goes on with the chain after a restart, and verifies across it', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const first = open(file, { checkpoint: { every: 5, secret } })
    await fill(first, 12)
    await first.close()
    const second = open(file, { checkpoint: { every: 5, secret } })
    await fill(second, 8, 12)
    const page = await second.query({ limit: 1000 })
    expect(page.entries.map((e) => e.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect(page.entries[12]?.prev).toBe(page.entries[11]?.hash)
    // What this process wrote stays readable at once, numbered as the trail numbers it.
    expect(second.entries().map((e) => e.seq)).toEqual([13, 14, 15, 16, 17, 18, 19, 20])
    expect(await second.verify()).toMatchObject({
      ok: true,
      first: 1,
      last: 20,
      checkpoints: 4,
      signatures: 'checked',
    })
  })

  it('removes what is older than maxAge (a fake clock), in batches, and verifies what is left', async () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 0, 1), toFake: ['Date'] })
    const file = join(dir, `${randomUUID()}.db`)
    const log = open(file, { retention: { maxAge: 3_600_000 } })
    await fill(log, 10)
    vi.setSystemTime(Date.UTC(2026, 0, 1, 0, 30))
    await fill(log, 5, 10)
    vi.setSystemTime(Date.UTC(2026, 0, 1, 1, 10))
    expect(await log.prune()).toBe(10)
    const page = await log.query()
    expect(page.entries.map((e) => e.seq)).toEqual([11, 12, 13, 14, 15])
    expect(await log.verify()).toMatchObject({ ok: true, first: 11, last: 15 })
    vi.setSystemTime(Date.UTC(2026, 0, 1, 2, 0))
    expect(await log.prune()).toBe(5)
    expect(await log.verify()).toMatchObject({ ok: true, entries: 0 })
    await fill(log, 1, 15)
    expect(await log.verify()).toMatchObject({ ok: true, first: 16, last: 16 })
  })

  it('keeps the file near maxBytes', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const log = open(file, { retention: { maxBytes: 256 * 1024 } })
    // About 300 bytes a record: 4,000 of them fill well over 1 MB.
    for (let i = 0; i < 4_000; i++)
      log.record({
        type: 'admin.action',
        action: 'ghost.purge',
        actor: 'ops',
        role: 'admin',
        source: '10.0.0.1',
        requestId: randomUUID(),
        target: 'x'.repeat(120),
      })
    await log.flush()
    const before = await log.stats()
    expect(before.entries).toBe(4_000)
    const removed = await log.prune()
    expect(removed).toBeGreaterThan(2_000)
    const used = tamper(file, (db) => {
      const page = db.pragma('page_size', { simple: true }) as number
      const pages = db.pragma('page_count', { simple: true }) as number
      const free = db.pragma('freelist_count', { simple: true }) as number
      return (pages - free) * page
    })
    expect(used).toBeLessThan(320 * 1024)
    expect(await log.verify()).toMatchObject({ ok: true, last: 4_000 })
  })

  it('is chosen through createAegis; a file it cannot open is an AegisConfigError naming audit.store.sqlite', async () => {
    const file = join(dir, `${randomUUID()}.db`)
    const aegis = createAegis({ limiter: false, audit: { store: { sqlite: file } } })
    expect(aegis.audit?.store).toBe('sqlite')
    aegis.events.emit('admin.action', {
      action: 'config.reload',
      actor: 'signal',
      role: 'admin',
      source: 'local',
      requestId: 'r1',
    })
    await aegis.close()
    const reopened = open(file)
    expect((await reopened.query()).entries).toMatchObject([
      { seq: 1, type: 'admin.action', data: { action: 'config.reload' } },
    ])
    const bad = () => createAegis({ audit: { store: { sqlite: join(dir, 'no', 'such', 'dir', 'a.db') } } })
    expect(bad).toThrow(AegisConfigError)
    expect(bad).toThrow(/audit\.store\.sqlite/)
  })
})
