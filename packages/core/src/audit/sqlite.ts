/**
 * The trail in a SQLite file, through better-sqlite3 (an optional peer dependency,
 * loaded only when `audit.store` asks for SQLite). WAL mode with `synchronous=NORMAL`:
 * readers never wait for the writer, and a commit costs no fsync (the WAL is synced at
 * its checkpoints; a power cut may lose the last commits, never corrupt the file).
 *
 * One table holds the records (the JSON text of each, as the data contract shapes it)
 * with the columns queries filter on copied beside it; verification checks the copies
 * against the text. `audit_meta` holds the head and the anchor (the link before the
 * oldest kept record) and the schema version. Appends run in one `BEGIN IMMEDIATE`
 * transaction per batch that reads the head inside it, so two processes writing one
 * file extend one chain. The busy timeout is 0: a file locked by another writer makes
 * the batch wait for the next try, never the event loop.
 */
import { statSync } from 'node:fs'
import { createRequire } from 'node:module'
import type BetterSqlite3 from 'better-sqlite3'
import { AegisConfigError } from '../kernel/errors.js'
import {
  GENESIS,
  parseRecord,
  seal,
  type AuditCheckpoint,
  type AuditRecord,
  type ChainLink,
  type StoredRecord,
} from './chain.js'
import { facetsOf, type AuditStore, type StoreQuery } from './store.js'

const SCHEMA_VERSION = '1'

const here = (): string => (typeof __filename === 'string' ? __filename : import.meta.url)

/** better-sqlite3, or an AegisConfigError naming `audit.store` when it is not installed (or not built). */
export function loadSqlite(): typeof BetterSqlite3 {
  try {
    return createRequire(here())('better-sqlite3') as typeof BetterSqlite3
  } catch (err) {
    const missing = (err as { code?: string }).code === 'MODULE_NOT_FOUND'
    throw new AegisConfigError([
      {
        path: 'audit.store',
        message: missing
          ? "a SQLite audit store needs the optional peer dependency better-sqlite3 12: install it (npm install better-sqlite3@12) or choose 'memory' or 'redis'"
          : `better-sqlite3 could not be loaded (${(err as Error).message.split('\n')[0]}); rebuild it for this Node.js (npm rebuild better-sqlite3)`,
      },
    ])
  }
}

interface Row {
  seq: number
  time: number
  type: string
  actor: string | null
  client: string | null
  route: string | null
  record: string
}

/** A row as verification reads it: the record, and whether the copied columns agree with it. */
function storedOf(row: Row): StoredRecord {
  const record = parseRecord(row.record)
  if (record === undefined)
    return { seq: row.seq, record: undefined, why: 'the stored text is not a version 1 record' }
  const f = facetsOf(record)
  const agrees =
    record.seq === row.seq &&
    Date.parse(record.time) === row.time &&
    record.type === row.type &&
    (f.actor ?? null) === row.actor &&
    (f.client ?? null) === row.client &&
    (f.route ?? null) === row.route
  return agrees
    ? { seq: row.seq, record }
    : { seq: row.seq, record: undefined, why: 'the columns of the row disagree with its record' }
}

/**
 * Open (or create) the trail in the SQLite file at `path`.
 *
 * @example
 * const store = openSqliteStore('/var/lib/aegis/audit.db', 'main')
 */
export function openSqliteStore(path: string, trail: string): AuditStore {
  const Database = loadSqlite()
  let db: BetterSqlite3.Database
  try {
    db = new Database(path, { timeout: 0 })
    // Incremental vacuum: retention gives pages back to the file system (set before the first table).
    db.pragma('auto_vacuum = INCREMENTAL')
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.exec(`
      CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS audit_entries (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        type TEXT NOT NULL,
        actor TEXT,
        client TEXT,
        route TEXT,
        record TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time);
      CREATE INDEX IF NOT EXISTS audit_entries_type ON audit_entries (type, seq);
      CREATE INDEX IF NOT EXISTS audit_entries_actor ON audit_entries (actor, seq) WHERE actor IS NOT NULL;
      CREATE INDEX IF NOT EXISTS audit_entries_client ON audit_entries (client, seq) WHERE client IS NOT NULL;
      CREATE TABLE IF NOT EXISTS audit_checkpoints (seq INTEGER PRIMARY KEY, checkpoint TEXT NOT NULL);
    `)
  } catch (err) {
    throw new AegisConfigError([
      { path: 'audit.store.sqlite', message: `cannot open the SQLite audit file: ${(err as Error).message}` },
    ])
  }
  const getMeta = db.prepare<[string], { value: string }>('SELECT value FROM audit_meta WHERE key = ?')
  const setMeta = db.prepare<[string, string]>(
    'INSERT INTO audit_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  )
  const meta = (key: string): string | undefined => getMeta.get(key)?.value
  const stored = meta('schema')
  if (stored !== undefined && stored !== SCHEMA_VERSION) {
    db.close()
    throw new AegisConfigError([
      {
        path: 'audit.store.sqlite',
        message: `the file holds an audit trail of schema ${stored}; this version of Aegis reads schema ${SCHEMA_VERSION}`,
      },
    ])
  }
  const storedTrail = meta('trail')
  if (storedTrail !== undefined && storedTrail !== trail) {
    db.close()
    throw new AegisConfigError([
      {
        path: 'audit.trail',
        message: `the SQLite file holds the trail ${JSON.stringify(storedTrail)}, not ${JSON.stringify(trail)}`,
      },
    ])
  }
  if (stored === undefined) {
    setMeta.run('schema', SCHEMA_VERSION)
    setMeta.run('trail', trail)
  }

  const insert = db.prepare<[number, number, string, string | null, string | null, string | null, string]>(
    'INSERT INTO audit_entries (seq, time, type, actor, client, route, record) VALUES (?, ?, ?, ?, ?, ?, ?)',
  )
  const lastRow = db.prepare<[], { record: string }>(
    'SELECT record FROM audit_entries ORDER BY seq DESC LIMIT 1',
  )
  const link = (prefix: 'head' | 'anchor'): ChainLink | undefined => {
    const seq = meta(`${prefix}_seq`)
    const hash = meta(`${prefix}_hash`)
    return seq === undefined || hash === undefined ? undefined : { seq: Number(seq), hash }
  }
  const setLink = (prefix: 'head' | 'anchor', l: ChainLink): void => {
    setMeta.run(`${prefix}_seq`, String(l.seq))
    setMeta.run(`${prefix}_hash`, l.hash)
  }
  /** The head as the file holds it: its meta row, else its last record (a file written before meta kept it). */
  const currentHead = (): ChainLink => {
    const h = link('head')
    if (h !== undefined) return h
    const last = lastRow.get()
    const r = last === undefined ? undefined : parseRecord(last.record)
    return r === undefined ? { seq: 0, hash: GENESIS } : { seq: r.seq, hash: r.hash }
  }

  const appendTx = db.transaction((drafts: Parameters<AuditStore['append']>[0]): AuditRecord[] => {
    const sealed = seal(currentHead(), drafts)
    for (const r of sealed) {
      const f = facetsOf(r)
      insert.run(
        r.seq,
        Date.parse(r.time),
        r.type,
        f.actor ?? null,
        f.client ?? null,
        f.route ?? null,
        JSON.stringify(r),
      )
    }
    const last = sealed[sealed.length - 1]
    if (last !== undefined) setLink('head', { seq: last.seq, hash: last.hash })
    return sealed
  })

  const pageAsc = db.prepare<[number, number], Row>(
    'SELECT seq, time, type, actor, client, route, record FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?',
  )
  const oldest = db.prepare<[], { seq: number; time: number }>(
    'SELECT seq, time FROM audit_entries ORDER BY seq LIMIT 1',
  )
  const newest = db.prepare<[], { seq: number; time: number }>(
    'SELECT seq, time FROM audit_entries ORDER BY seq DESC LIMIT 1',
  )
  const countAll = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM audit_entries')
  const byType = db.prepare<[], { type: string; n: number }>(
    'SELECT type, count(*) AS n FROM audit_entries GROUP BY type',
  )
  const nthRecord = db.prepare<[number], { seq: number; record: string }>(
    'SELECT seq, record FROM audit_entries ORDER BY seq LIMIT 1 OFFSET ?',
  )
  const countBefore = db.prepare<[number], { n: number }>(
    'SELECT count(*) AS n FROM audit_entries WHERE time < ?',
  )
  const deleteThrough = db.prepare<[number]>('DELETE FROM audit_entries WHERE seq <= ?')
  const insertCheckpoint = db.prepare<[number, string]>(
    'INSERT OR IGNORE INTO audit_checkpoints (seq, checkpoint) VALUES (?, ?)',
  )
  const allCheckpoints = db.prepare<[], { checkpoint: string }>(
    'SELECT checkpoint FROM audit_checkpoints ORDER BY seq',
  )
  const dropCheckpoints = db.prepare<[number]>('DELETE FROM audit_checkpoints WHERE seq < ?')
  const countCheckpoints = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM audit_checkpoints')

  /** Remove the records up to and including `seq`, keeping its link as the anchor. */
  const cutTx = db.transaction((seq: number, hash: string): void => {
    deleteThrough.run(seq)
    setLink('anchor', { seq, hash })
    dropCheckpoints.run(seq)
  })

  const usedBytes = (): number => {
    const pageSize = db.pragma('page_size', { simple: true }) as number
    const pages = db.pragma('page_count', { simple: true }) as number
    const free = db.pragma('freelist_count', { simple: true }) as number
    return (pages - free) * pageSize
  }
  const fileBytes = (): number => {
    let total = 0
    for (const suffix of ['', '-wal', '-shm']) {
      try {
        total += statSync(path + suffix).size
      } catch {
        // Not there (no WAL yet).
      }
    }
    return total
  }

  function search(q: StoreQuery) {
    const where: string[] = ['seq > ?', 'seq < ?']
    const params: (string | number)[] = [q.after, q.before]
    if (q.from > -Infinity) {
      where.push('time >= ?')
      params.push(q.from)
    }
    if (q.to < Infinity) {
      where.push('time < ?')
      params.push(q.to)
    }
    if (q.types !== undefined) {
      where.push(`type IN (${[...q.types].map(() => '?').join(', ')})`)
      params.push(...q.types)
    }
    for (const [column, value] of [
      ['actor', q.actor],
      ['client', q.client],
      ['route', q.route],
    ] as const) {
      if (value === undefined) continue
      where.push(`${column} = ?`)
      params.push(value)
    }
    const sql = `SELECT record FROM audit_entries WHERE ${where.join(' AND ')} ORDER BY seq ${q.desc ? 'DESC' : 'ASC'} LIMIT ?`
    const rows = db.prepare<(string | number)[], { record: string }>(sql).all(...params, q.limit)
    const records = rows.map((r) => parseRecord(r.record)).filter((r): r is AuditRecord => r !== undefined)
    const last = records[records.length - 1]
    return { records, next: rows.length === q.limit && last !== undefined ? last.seq : null }
  }

  let closed = false
  return {
    kind: 'sqlite',
    append: (drafts) => appendTx.immediate(drafts),
    search,
    addCheckpoint(c: AuditCheckpoint) {
      insertCheckpoint.run(c.seq, JSON.stringify(c))
    },
    prune(rule) {
      const total = countAll.get()?.n ?? 0
      if (total === 0) return 0
      // How many of the oldest go: the most any rule asks for, at most one batch.
      let cut = Math.max(total - rule.maxEntries, 0)
      const first = oldest.get()
      if (first !== undefined && first.time < rule.before) {
        // The records older than `before` are a prefix (time grows with seq, give or take a clock step).
        cut = Math.max(cut, countBefore.get(rule.before)?.n ?? 0)
      }
      if (rule.maxBytes !== undefined) {
        const used = usedBytes()
        if (used > rule.maxBytes) cut = Math.max(cut, Math.ceil(((used - rule.maxBytes) / used) * total))
      }
      cut = Math.min(cut, rule.batch, total)
      if (cut === 0) return 0
      const through = nthRecord.get(cut - 1)
      const r = through === undefined ? undefined : parseRecord(through.record)
      if (through === undefined) return 0
      cutTx.immediate(through.seq, r?.hash ?? GENESIS)
      db.pragma('incremental_vacuum')
      return cut
    },
    stats() {
      const first = oldest.get()
      const last = newest.get()
      const iso = (t: number): string => new Date(t).toISOString()
      return {
        entries: countAll.get()?.n ?? 0,
        byType: Object.fromEntries(byType.all().map((r) => [r.type, r.n])),
        first: first === undefined ? null : { seq: first.seq, time: iso(first.time) },
        last: last === undefined ? null : { seq: last.seq, time: iso(last.time) },
        bytes: fileBytes(),
        checkpoints: countCheckpoints.get()?.n ?? 0,
      }
    },
    anchor: () => link('anchor') ?? { seq: 0, hash: GENESIS },
    head: () => currentHead(),
    rows: (after, limit) => pageAsc.all(after, limit).map(storedOf),
    checkpoints: () =>
      allCheckpoints
        .all()
        .map((r) => {
          try {
            return JSON.parse(r.checkpoint) as AuditCheckpoint
          } catch {
            return undefined
          }
        })
        .filter((c): c is AuditCheckpoint => c !== undefined),
    close() {
      if (closed) return
      closed = true
      db.close()
    },
  }
}
