/**
 * Anomaly verdicts shared between instances through Redis: a client blocked by one
 * instance is blocked by every instance on the same store, and a campaign one instance
 * found (many clients acting together on a route) is known to all of them.
 *
 * Each verdict goes out twice in one script: a pub/sub message for the instances
 * running now, and an entry in Redis for those that start later or come back after an
 * outage (they load what is still live). Redis is never in the way: while it is down,
 * publishing does nothing and loading finds nothing, and every instance keeps enforcing
 * what it decided or learned itself. Whatever arrives, by message or from storage, is
 * checked field by field; what fails is dropped without a word to the sender.
 *
 * Ends are epoch milliseconds from the sender's clock, read against the receiver's:
 * instances are expected to keep their clocks in step (NTP), as any shared expiry does.
 */
import { randomUUID } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import type { Logger } from '../kernel/logger.js'
import type { RedisConnection } from '../store/index.js'
import { subscriberFor } from '../store/subscriber.js'

/** A client blocked by one instance, for all of them. */
export interface SharedBlock {
  /** The client key (`req.aegis.client.key`). */
  readonly key: string
  /** When the block ends, in epoch ms (`Date.now()` based). */
  readonly until: number
  /** Why, in short words (at most 16, each at most 64 characters). */
  readonly reasons: readonly string[]
  /** How many times this client was blocked before, this one included. */
  readonly strikes: number
}

/** A campaign one instance found, for all of them. */
export interface SharedCampaign {
  readonly id: string
  readonly route: string
  /** The /24 or /48 of a network's campaign. */
  readonly network?: string
  readonly kind: string
  /** When the campaign stops counting as live, in epoch ms. */
  readonly until: number
  /** What the finding instance knows of it (JSON; the whole message stays under 16 KiB). */
  readonly detail: Readonly<Record<string, unknown>>
}

/** The anomaly engine's side of Redis. */
export interface AnomalyBus {
  /**
   * Tell the others (fire and forget; never throws, never rejects). Also stored so an
   * instance that starts later, or reconnects, loads the live ones.
   */
  publishBlock(block: SharedBlock): void
  publishUnblock(key: string): void
  publishCampaign(c: SharedCampaign): void
  /** Handlers for the others' messages (never for this instance's own). */
  onBlock(handler: (b: SharedBlock) => void): void
  onUnblock(handler: (key: string) => void): void
  onCampaign(handler: (c: SharedCampaign) => void): void
  /**
   * Load the blocks and campaigns still live in Redis (at start and after a reconnect:
   * call handlers for each). Never rejects.
   */
  load(): Promise<void>
  close(): Promise<void>
}

/** Longest client key, campaign id or route accepted. */
const MAX_KEY = 256
const MAX_REASONS = 16
const MAX_REASON = 64
const MAX_KIND = 64
/** Longest message or stored entry: a block takes about 1.4 KiB at most; a campaign's detail gets the rest. */
const MAX_TEXT = 16 * 1024
/**
 * Latest end accepted, from now. A message ending a year from now is either a mistake or
 * someone else's, and Redis has to be able to expire the entry at that time.
 */
const MAX_AHEAD_MS = 366 * 24 * 3600 * 1000
/** Entries asked for per HSCAN while loading: each command stays short, whatever the total. */
const SCAN_COUNT = 500

const isString = (v: unknown, min: number, max: number): v is string =>
  typeof v === 'string' && v.length >= min && v.length <= max

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const isLive = (until: unknown, now: number): until is number =>
  typeof until === 'number' && Number.isFinite(until) && until > now && until <= now + MAX_AHEAD_MS

/** A block as it may be trusted, copied field by field (nothing else comes along), or `undefined`. */
function blockOf(v: unknown, now: number): SharedBlock | undefined {
  if (!isRecord(v)) return undefined
  const { key, until, reasons, strikes } = v
  if (!isString(key, 1, MAX_KEY) || !isLive(until, now)) return undefined
  if (typeof strikes !== 'number' || !Number.isSafeInteger(strikes) || strikes < 0) return undefined
  if (!Array.isArray(reasons) || reasons.length > MAX_REASONS) return undefined
  for (const r of reasons as unknown[]) if (!isString(r, 0, MAX_REASON)) return undefined
  return Object.freeze({ key, until, reasons: Object.freeze([...(reasons as string[])]), strikes })
}

function campaignOf(v: unknown, now: number): SharedCampaign | undefined {
  if (!isRecord(v)) return undefined
  const { id, route, network, kind, until, detail } = v
  if (!isString(id, 1, MAX_KEY) || !isString(route, 0, MAX_KEY) || !isString(kind, 1, MAX_KIND))
    return undefined
  if (network !== undefined && !isString(network, 1, MAX_KEY)) return undefined
  if (!isLive(until, now) || !isRecord(detail)) return undefined
  return Object.freeze({
    id,
    route,
    ...(network === undefined ? {} : { network }),
    kind,
    until,
    detail: Object.freeze({ ...detail }),
  })
}

/** JSON of `v`, or `undefined` when it has none (a BigInt, a cycle) or is too long to send. */
function jsonOf(v: unknown): string | undefined {
  try {
    const text = JSON.stringify(v)
    return text.length <= MAX_TEXT ? text : undefined
  } catch {
    return undefined
  }
}

function parse(text: string): unknown {
  if (text.length > MAX_TEXT + 256) return undefined
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/**
 * Store or remove one entry and tell the others, in one step: a message never announces
 * what storage then lacks, nor the reverse. Entries already ended go first; past `max`,
 * those that end soonest. Both keys expire with the last entry, so verdicts nobody
 * renews leave nothing behind. KEYS: the hash of entries, the sorted set of their ends.
 * ARGV: now, field, until ('' to remove), value, max, channel, message.
 */
const STORE_SCRIPT = `
local data, ends = KEYS[1], KEYS[2]
local max = tonumber(ARGV[5])
local function drop(fields)
  for _, f in ipairs(fields) do redis.call('HDEL', data, f) end
end
drop(redis.call('ZRANGEBYSCORE', ends, '-inf', ARGV[1]))
redis.call('ZREMRANGEBYSCORE', ends, '-inf', ARGV[1])
if ARGV[3] == '' then
  redis.call('ZREM', ends, ARGV[2])
  redis.call('HDEL', data, ARGV[2])
else
  redis.call('ZADD', ends, ARGV[3], ARGV[2])
  redis.call('HSET', data, ARGV[2], ARGV[4])
  local over = redis.call('ZCARD', ends) - max
  if over > 0 then
    drop(redis.call('ZRANGE', ends, 0, over - 1))
    redis.call('ZREMRANGEBYRANK', ends, 0, over - 1)
  end
end
local last = redis.call('ZRANGE', ends, -1, -1, 'WITHSCORES')
if last[2] then
  local at = string.format('%.0f', math.ceil(tonumber(last[2])))
  redis.call('PEXPIREAT', data, at)
  redis.call('PEXPIREAT', ends, at)
else
  redis.call('DEL', data, ends)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
`
const STORE_COMMAND = 'aegisAnomalyShare'
type StoreCommand = (
  data: string,
  ends: string,
  now: number,
  field: string,
  until: number | '',
  value: string,
  max: number,
  channel: string,
  message: string,
) => Promise<number>

type Kind = 'blocks' | 'campaigns'

/** A message on the channel: who sent it, and what. */
interface Message {
  readonly from: string
  readonly type: 'block' | 'unblock' | 'campaign'
  readonly data: unknown
}

/**
 * The bus on Aegis' Redis connection. Messages go out on `${prefix}anomaly`; live
 * verdicts are kept in `${prefix}{anomaly}:blocks` and `${prefix}{anomaly}:campaigns`
 * (hashes), each with the sorted set of their ends beside it (`…:ends`). The four keys
 * share the hash tag `{anomaly}`, so a Redis Cluster keeps them on one node and one
 * script can touch a hash and its set. At most `maxLoaded` (10,000) of each kind are
 * kept and loaded.
 *
 * The subscription gets a connection of its own, opened with the first handler. After
 * every (re)subscription the bus loads what Redis holds, so a message missed while the
 * connection was down is made up for: handlers must take the same verdict twice calmly
 * (applying a block already applied changes nothing). Handlers are the engine's; one
 * that throws is logged and the others still run.
 *
 * @example
 * const bus = createAnomalyBus(conn, logger)
 * bus.onBlock((b) => blocked.set(b.key, b.until))
 * bus.onUnblock((key) => blocked.delete(key))
 * await bus.load()
 * bus.publishBlock({ key: '203.0.113.7', until: Date.now() + 600_000, reasons: ['burst'], strikes: 1 })
 */
export function createAnomalyBus(
  conn: RedisConnection,
  logger: Logger | undefined,
  options: { maxLoaded?: number } = {},
): AnomalyBus {
  const maxLoaded = options.maxLoaded ?? 10_000
  if (!Number.isSafeInteger(maxLoaded) || maxLoaded < 1)
    throw new RangeError(`maxLoaded must be a positive integer, got ${maxLoaded}`)
  const id = randomUUID()
  const channel = `${conn.prefix}anomaly`
  const keys = {
    blocks: { data: `${conn.prefix}{anomaly}:blocks`, ends: `${conn.prefix}{anomaly}:blocks:ends` },
    campaigns: {
      data: `${conn.prefix}{anomaly}:campaigns`,
      ends: `${conn.prefix}{anomaly}:campaigns:ends`,
    },
  } as const
  const client = conn.client as Redis | Cluster
  const commands = client as unknown as Record<string, StoreCommand | undefined>
  if (commands[STORE_COMMAND] === undefined)
    client.defineCommand(STORE_COMMAND, { lua: STORE_SCRIPT, numberOfKeys: 2 })
  const share = (commands[STORE_COMMAND] as StoreCommand).bind(client)

  const blockHandlers: ((b: SharedBlock) => void)[] = []
  const unblockHandlers: ((key: string) => void)[] = []
  const campaignHandlers: ((c: SharedCampaign) => void)[] = []
  let subscriber: Redis | Cluster | undefined
  let closed = false
  let closing: Promise<void> | undefined

  /** Each handler in turn; one that throws is the engine's bug, not a reason to skip the next. */
  const call = <T>(handlers: readonly ((v: T) => void)[], value: T): void => {
    for (const handle of handlers) {
      try {
        handle(value)
      } catch (err) {
        logger?.warn({ err }, 'anomaly: a handler of a shared verdict threw')
      }
    }
  }

  // Keys and ids a message spoke of while a load ran: what the load read of them may be
  // older than the message (an unblock crossing a load must not be undone by it).
  let heard: { blocks: Set<string>; campaigns: Set<string> } | undefined

  const onMessage = (from: string, text: string): void => {
    if (from !== channel || closed) return
    const m = parse(text) as Partial<Message> | undefined
    if (!isRecord(m) || !isString(m.from, 1, 64) || m.from === id) return
    const now = Date.now()
    if (m.type === 'block') {
      const block = blockOf(m.data, now)
      if (block === undefined) return
      heard?.blocks.add(block.key)
      call(blockHandlers, block)
    } else if (m.type === 'unblock') {
      if (!isString(m.data, 1, MAX_KEY)) return
      heard?.blocks.add(m.data)
      call(unblockHandlers, m.data)
    } else if (m.type === 'campaign') {
      const campaign = campaignOf(m.data, now)
      if (campaign === undefined) return
      heard?.campaigns.add(campaign.id)
      call(campaignHandlers, campaign)
    }
  }

  /** Every live entry of one kind, checked, at most `maxLoaded`; a page at a time. */
  const loadKind = async (kind: Kind): Promise<void> => {
    let cursor = '0'
    let loaded = 0
    do {
      const [next, flat] = await client.hscan(keys[kind].data, cursor, 'COUNT', SCAN_COUNT)
      cursor = next
      const now = Date.now()
      for (let i = 1; i < flat.length && loaded < maxLoaded; i += 2) {
        const text = flat[i] as string
        if (kind === 'blocks') {
          const block = blockOf(parse(text), now)
          if (block === undefined || heard?.blocks.has(block.key) === true) continue
          loaded++
          call(blockHandlers, block)
        } else {
          const campaign = campaignOf(parse(text), now)
          if (campaign === undefined || heard?.campaigns.has(campaign.id) === true) continue
          loaded++
          call(campaignHandlers, campaign)
        }
      }
    } while (cursor !== '0' && loaded < maxLoaded && !closed)
  }

  // A load wanted while Redis could not answer: the next `ready` of the connection runs it.
  let pending = false
  let running: Promise<void> | undefined
  let again = false

  const loadOnce = async (): Promise<void> => {
    if (closed) return
    if (client.status !== 'ready') {
      pending = true
      return
    }
    pending = false
    heard = { blocks: new Set(), campaigns: new Set() }
    try {
      await loadKind('blocks')
      await loadKind('campaigns')
    } catch (err) {
      if (closed) return
      pending = true
      conn.fail(err)
      logger?.debug?.({ err }, 'anomaly: shared verdicts not loaded')
    } finally {
      heard = undefined
    }
  }

  /**
   * One load at a time. A caller joins the one running; a subscription made while it
   * runs (`rerun`) asks for one more after it, as the running one may have read Redis
   * before the subscription could hear anything.
   */
  const requestLoad = (rerun: boolean): Promise<void> => {
    if (running !== undefined) {
      again ||= rerun
      return running
    }
    running = (async () => {
      do {
        again = false
        await loadOnce()
      } while (again && !closed)
    })().finally(() => (running = undefined))
    return running
  }

  const onReady = (): void => {
    if (pending && subscriber !== undefined) void requestLoad(true)
  }

  /**
   * The subscriber: unlike the request path's connection it may wait for Redis (no
   * command timeout, no retry limit). It subscribes on every `ready`: ioredis subscribes
   * again by itself after a reconnect, before `ready` is emitted, so once our SUBSCRIBE
   * answers, the channel is heard again and a load fills in what was missed.
   */
  const listen = (): Redis | Cluster => {
    const s = subscriberFor(conn)
    s.on('message', onMessage)
    s.on('ready', () => {
      s.subscribe(channel).then(
        () => void requestLoad(true),
        (err: unknown) => {
          if (!closed) logger?.warn({ err }, 'anomaly: verdicts not shared yet: subscribing failed')
        },
      )
    })
    s.on('error', () => undefined) // the store's own connection reports outages
    // The store's connection may come back after the subscriber: a load waiting on it runs then.
    client.on('ready', onReady)
    return s
  }

  const listening = (): void => {
    if (subscriber === undefined && !closed) subscriber = listen()
  }

  /** Verdicts made before the first connection, sent once it is made (the latest per key, bounded). */
  const held = new Map<string, () => void>()

  const send = (
    kind: Kind,
    field: string,
    until: number | '',
    value: string,
    type: Message['type'],
    data: unknown,
  ): void => {
    if (closed) return
    // A load running now may have read this entry before the change: it must not undo it here.
    heard?.[kind].add(field)
    if (conn.starting) {
      const slot = `${kind}\n${field}`
      if (held.size >= maxLoaded && !held.has(slot)) return
      if (held.size === 0)
        void conn.started.then(() => {
          const waiting = [...held.values()]
          held.clear()
          for (const flush of waiting) flush()
        })
      held.set(slot, () => send(kind, field, until, value, type, data))
      return
    }
    if (!conn.up) return
    const message = JSON.stringify({ from: id, type, data } satisfies Message)
    const { data: hash, ends } = keys[kind]
    share(hash, ends, Date.now(), field, until, value, maxLoaded, channel, message).catch((err: unknown) => {
      if (closed) return
      conn.fail(err)
      logger?.debug?.({ err, type }, 'anomaly: verdict not shared')
    })
  }

  /**
   * Publishing never throws into the engine: a getter of the caller's object that throws
   * (a proxy, a class with accessors) is the worst a verdict can hold, and it is dropped.
   */
  const safely = (what: string, publish: () => void): void => {
    try {
      publish()
    } catch (err) {
      logger?.debug?.({ err }, `anomaly: ${what} not shareable`)
    }
  }

  return {
    publishBlock: (block) =>
      safely('block', () => {
        const b = blockOf(block, Date.now())
        const text = b && jsonOf(b)
        // Our own engine's verdict failing the checks is a bug: logged, without the client's key (an address).
        if (b === undefined || text === undefined)
          return void logger?.debug?.({}, 'anomaly: block not shareable')
        send('blocks', b.key, b.until, text, 'block', b)
      }),
    publishUnblock(key) {
      if (!isString(key, 1, MAX_KEY)) return
      send('blocks', key, '', '', 'unblock', key)
    },
    publishCampaign: (campaign) =>
      safely('campaign', () => {
        const c = campaignOf(campaign, Date.now())
        const text = c && jsonOf(c)
        if (c === undefined || text === undefined)
          return void logger?.debug?.({}, 'anomaly: campaign not shareable')
        send('campaigns', c.id, c.until, text, 'campaign', c)
      }),
    onBlock(handler) {
      blockHandlers.push(handler)
      listening()
    },
    onUnblock(handler) {
      unblockHandlers.push(handler)
      listening()
    },
    onCampaign(handler) {
      campaignHandlers.push(handler)
      listening()
    },
    load() {
      return requestLoad(false)
    },
    close() {
      return (closing ??= (async () => {
        closed = true
        held.clear()
        blockHandlers.length = unblockHandlers.length = campaignHandlers.length = 0
        const s = subscriber
        subscriber = undefined
        if (s === undefined) return
        client.removeListener('ready', onReady)
        await running
        // QUIT waits for Redis: only when it is there to answer.
        if (s.status === 'ready') await s.quit().catch(() => s.disconnect())
        else s.disconnect()
      })())
    },
  }
}
