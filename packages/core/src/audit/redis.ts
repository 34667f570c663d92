/**
 * The trail in a Redis stream, shared by every instance on the `store` option's Redis
 * or Cluster. One chain per trail, however many write it: an append is a
 * compare-and-set in one Lua script — the writer seals its batch after the head it
 * last saw and sends that head's seq; the script appends only if the stream's head is
 * still there, and otherwise answers the head it has, after which the writer seals
 * again (Redis' Lua has no SHA-256, so the hashes are computed by the writer and the
 * script only keeps the order). Verification then walks one chain, whoever wrote each
 * record (its `writer` says who).
 *
 * Keys share the hash tag `{audit:<trail>}`, so a Cluster keeps them on one node and
 * one script can touch them all:
 *
 * - `<prefix>{audit:<trail>}:log` — the stream; each entry's id is `<seq>-0` (a page by
 *   seq is one XRANGE), its field `r` the record's JSON;
 * - `…:head` — a hash: `seq` and `hash` of the last record, `anchorSeq` / `anchorHash`
 *   of the last one retention removed;
 * - `…:types` — a hash: how many records of each type the stream holds;
 * - `…:cp` — the checkpoints, a stream with ids `<seq>-0`, field `c`.
 */
import type { Cluster, Redis } from 'ioredis'
import type { RedisConnection } from '../store/index.js'
import {
  GENESIS,
  parseRecord,
  seal,
  type AuditCheckpoint,
  type AuditDraft,
  type AuditRecord,
  type ChainLink,
  type StoredRecord,
} from './chain.js'
import { matches, type AuditStore, type StoreQuery } from './store.js'

// KEYS: log, head, types. ARGV: the head's expected seq, the new head's seq and hash, then (type, JSON) pairs.
const APPEND_SCRIPT = `
local h = redis.call('HMGET', KEYS[2], 'seq', 'hash')
local seq = tonumber(h[1])
local hash = h[2]
if not seq then
  seq = 0
  hash = ''
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local ok, r = pcall(cjson.decode, last[1][2][2])
    if ok and type(r) == 'table' and type(r.hash) == 'string' then hash = r.hash end
    seq = tonumber(string.match(last[1][1], '^(%d+)'))
  end
end
if seq ~= tonumber(ARGV[1]) then return {0, tostring(seq), hash or ''} end
for i = 4, #ARGV, 2 do
  seq = seq + 1
  redis.call('XADD', KEYS[1], string.format('%d-0', seq), 'r', ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], ARGV[i], 1)
end
if #ARGV > 3 then redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'hash', ARGV[3]) end
return {1, ARGV[2], ARGV[3]}
`

// KEYS: log, head, types, cp. ARGV: remove records with seq <= ARGV[1], at most ARGV[2] of them.
const PRUNE_SCRIPT = `
local entries = redis.call('XRANGE', KEYS[1], '-', string.format('%d-0', tonumber(ARGV[1])), 'COUNT', tonumber(ARGV[2]))
if #entries == 0 then return 0 end
local lastSeq = 0
local lastHash = ''
for _, e in ipairs(entries) do
  local ok, r = pcall(cjson.decode, e[2][2])
  lastHash = ''
  if ok and type(r) == 'table' then
    if type(r.type) == 'string' then
      if redis.call('HINCRBY', KEYS[3], r.type, -1) <= 0 then redis.call('HDEL', KEYS[3], r.type) end
    end
    if type(r.hash) == 'string' then lastHash = r.hash end
  end
  lastSeq = tonumber(string.match(e[1], '^(%d+)'))
end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', lastSeq + 1))
redis.call('HSET', KEYS[2], 'anchorSeq', lastSeq, 'anchorHash', lastHash)
redis.call('XTRIM', KEYS[4], 'MINID', string.format('%d-0', lastSeq))
return #entries
`

const APPEND = 'aegisAuditAppend'
const PRUNE = 'aegisAuditPrune'
type Append = (
  log: string,
  head: string,
  types: string,
  ...args: (string | number)[]
) => Promise<[number, string, string]>
type Prune = (
  log: string,
  head: string,
  types: string,
  cp: string,
  through: number,
  batch: number,
) => Promise<number>

/** How many times a batch is sealed again after another writer moved the head, before it waits for the next try. */
const MAX_RACES = 8
/** Records a query reads at most before it answers with what it found and where to go on. */
const MAX_SCAN = 20_000

type StreamEntry = [id: string, fields: string[]]

const seqOf = (id: string): number => Number.parseInt(id, 10)

const storedOf = ([id, fields]: StreamEntry): StoredRecord => {
  const seq = seqOf(id)
  const i = fields.indexOf('r')
  const record = i < 0 ? undefined : parseRecord(fields[i + 1] ?? '')
  return record === undefined
    ? { seq, record: undefined, why: 'the stream entry holds no version 1 record' }
    : { seq, record }
}

/**
 * The trail `trail` in Redis, on Aegis' own connection.
 *
 * @example
 * const store = createRedisStore(conn, 'main')
 */
export function createRedisStore(conn: RedisConnection, trail: string): AuditStore {
  const base = `${conn.prefix}{audit:${trail}}`
  const keys = { log: `${base}:log`, head: `${base}:head`, types: `${base}:types`, cp: `${base}:cp` }
  const client = conn.client as Redis | Cluster
  const commands = client as unknown as Record<string, unknown>
  if (commands[APPEND] === undefined) client.defineCommand(APPEND, { lua: APPEND_SCRIPT, numberOfKeys: 3 })
  if (commands[PRUNE] === undefined) client.defineCommand(PRUNE, { lua: PRUNE_SCRIPT, numberOfKeys: 4 })
  const append = (commands[APPEND] as Append).bind(client)
  const prune = (commands[PRUNE] as Prune).bind(client)

  /** The head as this writer last saw it (`undefined`: not asked yet). */
  let head: ChainLink | undefined

  const range = async (start: string, end: string, count: number): Promise<StreamEntry[]> =>
    await client.xrange(keys.log, start, end, 'COUNT', count)
  const revrange = async (end: string, start: string, count: number): Promise<StreamEntry[]> =>
    await client.xrevrange(keys.log, end, start, 'COUNT', count)
  const id = (seq: number): string => `${seq}-0`

  /** The time of the first record with seq ≥ `seq`, and its seq (`undefined`: none). */
  const firstFrom = async (seq: number): Promise<{ seq: number; time: number } | undefined> => {
    const [entry] = await range(id(Math.max(seq, 0)), '+', 1)
    const r = entry === undefined ? undefined : storedOf(entry)
    return r === undefined
      ? undefined
      : { seq: r.seq, time: r.record === undefined ? NaN : Date.parse(r.record.time) }
  }
  const ends = async (): Promise<{ first: number; last: number } | undefined> => {
    const [[first], [last]] = await Promise.all([range('-', '+', 1), revrange('+', '-', 1)])
    return first === undefined || last === undefined
      ? undefined
      : { first: seqOf(first[0]), last: seqOf(last[0]) }
  }
  /**
   * The seq of the first record written at or after `t` (time grows with seq, give or
   * take the writers' clocks): a binary search, one XRANGE a step.
   */
  const seqAtTime = async (t: number, lo: number, hi: number): Promise<number> => {
    let a = lo
    let b = hi + 1
    while (a < b) {
      const mid = Math.floor((a + b) / 2)
      const found = await firstFrom(mid)
      if (found === undefined) {
        b = mid
        continue
      }
      if (!(found.time < t)) b = Math.min(mid, found.seq)
      else a = found.seq + 1
    }
    return a
  }

  return {
    kind: 'redis',
    async append(drafts: readonly AuditDraft[]): Promise<readonly AuditRecord[]> {
      for (let race = 0; race <= MAX_RACES; race++) {
        if (head === undefined) {
          const [, seq, hash] = await append(keys.log, keys.head, keys.types, -1, 0, '')
          head = { seq: Number(seq), hash: hash === '' ? GENESIS : hash }
        }
        const sealed = seal(head, drafts)
        const last = sealed[sealed.length - 1]
        if (last === undefined) return sealed
        const args: string[] = []
        for (const r of sealed) args.push(r.type, JSON.stringify(r))
        const [ok, seq, hash] = await append(
          keys.log,
          keys.head,
          keys.types,
          head.seq,
          last.seq,
          last.hash,
          ...args,
        )
        head = { seq: Number(seq), hash: hash === '' ? GENESIS : hash }
        if (ok === 1) return sealed
      }
      throw new Error(
        `audit: another writer kept moving the head of trail ${trail}; the batch waits for the next try`,
      )
    },
    async search(q: StoreQuery) {
      const out: AuditRecord[] = []
      let after = q.after
      let before = q.before
      // Time bounds narrow the seq range first (binary search), so a range query reads only its range.
      if (q.from > -Infinity || q.to < Infinity) {
        const e = await ends()
        if (e === undefined) return { records: [], next: null }
        if (q.from > -Infinity) after = Math.max(after, (await seqAtTime(q.from, e.first, e.last)) - 1)
        if (q.to < Infinity) before = Math.min(before, await seqAtTime(q.to, e.first, e.last))
      }
      let scanned = 0
      let cursor = q.desc ? before : after
      const page = Math.min(Math.max(q.limit * 2, 100), 1_000)
      while (out.length < q.limit) {
        if (scanned >= MAX_SCAN) return { records: out, next: cursor }
        const entries = q.desc
          ? await revrange(cursor === Infinity ? '+' : id(cursor - 1), after <= 0 ? '-' : id(after + 1), page)
          : await range(id(cursor + 1), before === Infinity ? '+' : id(before - 1), page)
        for (const entry of entries) {
          scanned++
          const { seq, record } = storedOf(entry)
          cursor = seq
          if (record !== undefined && matches(record, q)) {
            out.push(record)
            if (out.length === q.limit) break
          }
        }
        if (entries.length < page && out.length < q.limit) return { records: out, next: null }
        if ((q.desc && cursor <= after + 1) || (!q.desc && cursor >= before - 1))
          return { records: out, next: null }
      }
      return { records: out, next: cursor }
    },
    async addCheckpoint(c: AuditCheckpoint) {
      try {
        await client.xadd(keys.cp, id(c.seq), 'c', JSON.stringify(c))
      } catch (err) {
        // Another writer checkpointed at or after this seq: its checkpoint stands.
        if (!/equal or smaller/i.test((err as Error).message)) throw err
      }
    },
    async prune(rule) {
      const e = await ends()
      if (e === undefined) return 0
      const held = e.last - e.first + 1
      let through = e.first - 1 + Math.max(held - rule.maxEntries, 0)
      const oldest = await firstFrom(e.first)
      if (oldest !== undefined && oldest.time < rule.before)
        through = Math.max(through, (await seqAtTime(rule.before, e.first, e.last)) - 1)
      if (rule.maxBytes !== undefined) {
        const used = Number((await client.call('MEMORY', 'USAGE', keys.log)) ?? 0)
        if (used > rule.maxBytes)
          through = Math.max(through, e.first - 1 + Math.ceil(((used - rule.maxBytes) / used) * held))
      }
      through = Math.min(through, e.first - 1 + rule.batch, e.last)
      if (through < e.first) return 0
      return Number(await prune(keys.log, keys.head, keys.types, keys.cp, through, rule.batch))
    },
    async stats() {
      const [len, first, last, types, cps, bytes] = await Promise.all([
        client.xlen(keys.log),
        range('-', '+', 1),
        revrange('+', '-', 1),
        client.hgetall(keys.types),
        client.xlen(keys.cp),
        (client.call('MEMORY', 'USAGE', keys.log) as Promise<number | null>).catch(() => null),
      ])
      const point = (entries: StreamEntry[]): { seq: number; time: string } | null => {
        const r = entries[0] === undefined ? undefined : storedOf(entries[0])
        return r === undefined ? null : { seq: r.seq, time: r.record?.time ?? '' }
      }
      return {
        entries: len,
        byType: Object.fromEntries(Object.entries(types).map(([k, v]) => [k, Number(v)])),
        first: point(first),
        last: point(last),
        bytes: bytes === null ? null : Number(bytes),
        checkpoints: cps,
      }
    },
    async anchor() {
      const [seq, hash] = await client.hmget(keys.head, 'anchorSeq', 'anchorHash')
      return seq === null ? { seq: 0, hash: GENESIS } : { seq: Number(seq), hash: hash ?? '' }
    },
    async head() {
      const [seq, hash] = await client.hmget(keys.head, 'seq', 'hash')
      return seq === null ? { seq: 0, hash: GENESIS } : { seq: Number(seq), hash: hash ?? '' }
    },
    async rows(after, limit) {
      return (await range(id(after + 1), '+', limit)).map(storedOf)
    },
    async checkpoints() {
      const entries = (await client.xrange(keys.cp, '-', '+')) as StreamEntry[]
      const out: AuditCheckpoint[] = []
      for (const [, fields] of entries) {
        const i = fields.indexOf('c')
        try {
          out.push(JSON.parse(fields[i + 1] ?? '') as AuditCheckpoint)
        } catch {
          // A checkpoint that does not parse checks nothing.
        }
      }
      return out
    },
    close() {
      // The connection is the store option's: closed by the instance after its engines.
    },
  }
}
