/*
 * The Redis GCRA store, on one Redis or a Redis Cluster: the GCRA of gcra.ts as one Lua script: every policy of a request is decided in
 * one atomic round trip (every enforcing policy conforms → the conforming ones
 * are charged; otherwise nothing is, and the refused ones with a `blockDuration`
 * are banned). Policies in `observe` mode never refuse the request. Time is the
 * Redis server's (TIME), so instances with drifting clocks share one timeline.
 * A key holds the bucket's theoretical arrival time in ms, or `b<until>` while
 * banned; it expires when the bucket would be full, so Redis holds only live keys.
 */
import type { RedisClient, RedisConnection } from '../../store/index.js'
import { newVerdict, type Rate, type Verdict } from '../gcra.js'
import { splitBy, type Decision, type RateLimitStore, type StorePolicy } from '../store.js'

const SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local op = ARGV[1]
local n = #KEYS
local out = {}
local tats = {}
local conform = true
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local interval = tonumber(ARGV[a])
  local tolerance = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 2])
  local enforce = ARGV[a + 4] == '1'
  local o = (i - 1) * 5
  local v = redis.call('GET', KEYS[i])
  local banned = 0
  local tat = now
  if v then
    if string.sub(v, 1, 1) == 'b' then
      local untilMs = tonumber(string.sub(v, 2))
      if untilMs > now then banned = untilMs end
    else
      tat = math.max(tonumber(v), now)
    end
  end
  if banned > 0 then
    if enforce then conform = false end
    tats[i] = false
    out[o + 1] = 0
    out[o + 2] = 0
    out[o + 3] = math.ceil(banned - now)
    out[o + 4] = math.ceil(banned - now)
    out[o + 5] = 1
  elseif op == 'a' then
    local newTat = math.max(now, tat + cost * interval)
    tats[i] = newTat
    out[o + 1] = 1
    out[o + 2] = math.max(0, math.floor((tolerance - (newTat - now)) / interval + 1e-3))
    out[o + 3] = math.ceil(newTat - now)
    out[o + 4] = 0
    out[o + 5] = 0
  else
    local newTat = tat + cost * interval
    local used = newTat - now
    if used <= tolerance + 1e-3 then
      tats[i] = newTat
      out[o + 1] = 1
      out[o + 2] = math.floor((tolerance - used) / interval + 1e-3)
      out[o + 3] = math.ceil(used)
      out[o + 4] = 0
    else
      if enforce then conform = false end
      tats[i] = false
      out[o + 1] = 0
      out[o + 2] = math.max(0, math.floor((tolerance - (tat - now)) / interval + 1e-3))
      out[o + 3] = math.ceil(tat - now)
      out[o + 4] = math.ceil(used - tolerance)
    end
    out[o + 5] = 0
  end
end
if op == 'g' then return out end
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local block = tonumber(ARGV[a + 3])
  local o = (i - 1) * 5
  if tats[i] and (conform or op == 'a') then
    local ttl = math.ceil(tats[i] - now)
    if ttl > 0 then
      redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', ttl)
    else
      redis.call('DEL', KEYS[i])
    end
  elseif tats[i] then
    -- Admitted by this policy but refused by another: not charged, report what it holds.
    local cost = tonumber(ARGV[a + 2])
    out[o + 2] = math.floor(out[o + 2] + cost)
    out[o + 3] = math.ceil(math.max(0, tats[i] - cost * tonumber(ARGV[a]) - now))
  elseif op == 'c' and out[o + 1] == 0 and out[o + 5] == 0 and block > 0 then
    redis.call('SET', KEYS[i], 'b' .. string.format('%.3f', now + block), 'PX', block)
    out[o + 3] = math.ceil(block)
    out[o + 4] = block
    out[o + 5] = 1
  end
end
return out
`

type GcraCommand = (...keysThenArgs: (string | number)[]) => Promise<number[]>
const COMMAND = 'aegisGcra'

/** What the script is asked: consume (all or nothing), adjust (penalty / reward), or get. */
export type GcraOp = 'c' | 'a' | 'g'

/**
 * Run the GCRA script for the buckets of one request. `keys` must share a Redis
 * Cluster hash slot (the caller tags them with the client key).
 */
export function createRedisGcra(client: RedisClient, maxKeys = 1) {
  const commands = client as unknown as Record<string, GcraCommand | undefined>
  // One command per key count, each defined with its `numberOfKeys`. Without it the key
  // count is the first argument ioredis sees, and with auto-pipelining a Cluster client
  // picks the pipeline by the slot of that first argument ("1"): concurrent scripts for
  // keys of other slots then share a pipeline the cluster refuses (issue 14, finding 3).
  // With it, the first argument is the first key and each script goes to its own slot's
  // pipeline. A request has at most one key per policy, so there are few counts.
  // ioredis sends EVALSHA and loads the script on NOSCRIPT (after a Redis restart too).
  const runners: GcraCommand[] = []
  const runnerFor = (numberOfKeys: number): GcraCommand => {
    let run = runners[numberOfKeys]
    if (run === undefined) {
      const name = `${COMMAND}${numberOfKeys}`
      if (commands[name] === undefined) client.defineCommand(name, { lua: SCRIPT, numberOfKeys })
      run = runners[numberOfKeys] = (commands[name] as GcraCommand).bind(client)
    }
    return run
  }
  // Every command is defined now, not at its first use: ioredis builds an auto-pipeline with
  // the commands defined so far, and one created in the same tick by another engine's
  // command (the anomaly engine's load) would lack a command defined after it
  // ("pipeline[functionName] is not a function", a store error on a healthy Redis).
  for (let n = 1; n <= maxKeys; n++) runnerFor(n)

  return async function gcra(
    op: GcraOp,
    keys: readonly string[],
    rates: readonly Rate[],
    costs: readonly number[],
    out: Verdict[],
    enforce: readonly boolean[],
  ): Promise<Verdict[]> {
    const args: (string | number)[] = [...keys, op]
    for (let i = 0; i < keys.length; i++) {
      const r = rates[i] as Rate
      args.push(r.interval, r.tolerance, costs[i] ?? 0, r.blockMs, enforce[i] === false ? 0 : 1)
    }
    const reply = await runnerFor(keys.length)(...args)
    for (let i = 0; i < keys.length; i++) {
      const v = out[i] as Verdict
      const o = i * 5
      v.allowed = reply[o] === 1
      v.remaining = Number(reply[o + 1])
      v.resetMs = Number(reply[o + 2])
      v.retryMs = Number(reply[o + 3])
      v.banned = reply[o + 4] === 1
    }
    return out
  }
}

/** The Redis key of a bucket: the client key is the Cluster hash tag, so one request's buckets share a slot. */
export function bucketKey(prefix: string, clientKey: string, policy: string): string {
  const tag = clientKey.includes('{') || clientKey.includes('}') ? encodeURIComponent(clientKey) : clientKey
  return `${prefix}rl:{${tag === '' ? '-' : tag}}:${policy}`
}

/**
 * The Redis GCRA store. The same store serves one Redis and a Redis Cluster: a request's
 * buckets of one client key share the key's hash tag (`bucketKey`), so each script touches
 * one slot, and a request whose policies count different keys runs one script per key.
 * Errors reject: the insured store (insured.ts) decides in memory then.
 *
 * @example
 * const store = createRedisGcraStore(conn) // conn from connectStore()
 * const verdicts = await store.consume([policy], ['203.0.113.7'], [1], performance.now())
 */
export function createRedisGcraStore(
  conn: Pick<RedisConnection, 'client' | 'prefix'>,
  policies = 1,
): RateLimitStore {
  const gcra = createRedisGcra(conn.client, policies)
  const { prefix } = conn
  const one = [true]

  const store: RateLimitStore = {
    consume(policies, keys, costs, now, out = policies.map(newVerdict)): Promise<Decision> {
      const n = policies.length
      const first = keys[0] as string
      for (let i = 1; i < n; i++) {
        // Keys of several clients: one script per hash slot, kept all or nothing by refunds.
        if (keys[i] !== first) return splitBy(store, (j) => keys[j], policies, keys, costs, now, out)
      }
      const redisKeys: string[] = []
      const rates: Rate[] = []
      const enforce: boolean[] = []
      for (let i = 0; i < n; i++) {
        const p = policies[i] as StorePolicy
        redisKeys.push(bucketKey(prefix, first, p.name))
        rates.push(p.rate)
        enforce.push(p.enforce)
      }
      return gcra('c', redisKeys, rates, costs, out, enforce)
    },
    async adjust(policy, key, points) {
      await gcra('a', [bucketKey(prefix, key, policy.name)], [policy.rate], [points], [newVerdict()], one)
    },
    async get(policy, key, out) {
      const { rate } = policy
      await gcra('g', [bucketKey(prefix, key, policy.name)], [rate], [0], [out], one)
      if (out.banned) return out
      // Expired (TTL past) or never set: a full bucket, as memory's `get` reports it.
      if (out.resetMs <= 0) return undefined
      if (out.remaining === 0) out.retryMs = Math.max(0, out.resetMs - rate.tolerance + rate.interval)
      return out
    },
    async reset(policy, key) {
      await conn.client.del(bucketKey(prefix, key, policy.name))
    },
  }
  return store
}
