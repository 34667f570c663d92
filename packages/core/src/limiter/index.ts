import type { IncomingMessage } from 'node:http'
import { parseAddress } from '../client/index.js'
import { AegisArgumentError, AegisConfigError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import { guardCallback } from '../kernel/callbacks.js'
import type { LimiterOutcome, Metrics } from '../metrics/index.js'
import type { HeaderList, ClientIdentity, Rejection } from '../kernel/types.js'
import type { RedisConnection } from '../store/index.js'
import type { Warn } from '../kernel/warnings.js'
import { createAdaptiveLimiter } from './adaptive.js'
import { createLoopMonitor } from './event-loop.js'
import {
  clientDenied,
  limitHeaders,
  limiterUnavailable,
  overloaded,
  policyItem,
  quotaExceeded,
  sfString,
  type HeaderStyle,
  type PolicyInfo,
} from './answers.js'
import { FixedWindow } from './fixed-window.js'
import { createExemptions, createListing, type Listing } from './lists.js'
import { MemoryBuckets, newVerdict, type Rate, type Verdict } from './gcra.js'
import type { CostFunction, KeyFunction, LimiterConfig, PolicyConfig } from './options.js'
import { bucketKey, createRedisGcra } from './redis-gcra.js'
import { createRouteMatcher } from './routes.js'

export { limiterSchema, limiterSection, policySchema } from './options.js'
export type { LimiterOptions, LimiterConfig, PolicyOptions, KeyFunction, CostFunction } from './options.js'
export type { Verdict } from './gcra.js'

/** A compiled policy. */
interface Policy extends PolicyInfo {
  readonly rate: Rate
  readonly algorithm: 'gcra' | 'fixed-window'
  readonly enforce: boolean
  readonly failClosed: boolean
  readonly key: KeyFunction | undefined
  readonly cost: number | CostFunction
  /** Decision counters by outcome (found once; no lookup per request). */
  readonly counted: Record<LimiterOutcome, { value: number }>
  /** Memory buckets: the store itself, or the insurance of the Redis one. */
  readonly memory: MemoryBuckets
  readonly fixed: FixedWindow | undefined
}

/** The rate-limit verdict of one request: header fields to add, and a rejection when refused. */
export interface LimitResult {
  readonly headers: HeaderList
  readonly rejection: Rejection | undefined
  /** The request holds an adaptive-concurrency slot: call `release()` when its response ends. */
  readonly acquired?: boolean
}

/** The state of one key under one policy (admin API). */
export interface LimitStatus {
  readonly policy: string
  readonly limit: number
  readonly remaining: number
  /** Milliseconds until the quota is whole again. */
  readonly resetMs: number
  /** Milliseconds until one more request would be admitted (0: now). */
  readonly retryMs: number
  readonly banned: boolean
}

/** The rate limiter of an Aegis instance (`shield.limiter`). */
export interface Limiter {
  /**
   * Decide a request: `undefined` when no policy applies to it; a promise when a shared store
   * decides. `now` is `performance.now()` at admission, if the caller has it.
   */
  check(
    req: IncomingMessage,
    client: ClientIdentity,
    now?: number,
  ): LimitResult | Promise<LimitResult> | undefined
  /**
   * Charge extra points to the keys of an admitted request (a failed login costs more);
   * `policy` narrows it to one. Takes Node's request (Express `req`, Koa `ctx.req`) or Fastify's.
   */
  penalty(req: IncomingMessage | { raw: IncomingMessage }, points: number, policy?: string): Promise<void>
  /** Give points back to the keys of an admitted request (a successful login refunds its attempts). */
  reward(req: IncomingMessage | { raw: IncomingMessage }, points: number, policy?: string): Promise<void>
  /** The state of a key (a client key such as `203.0.113.7`, or what your `key()` returns). */
  get(key: string, policy?: string): Promise<LimitStatus | undefined>
  /** Forget a key: its bucket and any ban. */
  reset(key: string, policy?: string): Promise<void>
  /** Give back the adaptive-concurrency slot of a request whose result said `acquired`. */
  release(latencyMs: number, ok: boolean): void
  /** The adaptive concurrency limit in force, when `adaptive` is on. */
  readonly concurrencyLimit: number | undefined
  /** Names of the configured policies. */
  readonly policies: readonly string[]
  /** Stop the event-loop monitor. */
  close(): void
}

export interface LimiterDeps {
  readonly conn: RedisConnection | undefined
  readonly metrics: Metrics | undefined
  readonly warn: Warn
  /** Paths exempt besides the configured ones (the metrics path). */
  readonly exemptPaths: readonly string[]
  /** Whether a proxy is trusted (the one-address warning only makes sense without). */
  readonly trustsProxy: boolean
  /** The client of an admitted request (for penalty / reward). */
  readonly clientOf: (req: IncomingMessage) => ClientIdentity | undefined
}

const ONE_CLIENT_STREAK = 1_000

/** What the limiter does while Redis is down, as the store's outage log line says it. */
function fallbackOf(policies: readonly Pick<Policy, 'name' | 'failClosed'>[]): string {
  const closed = policies.filter((p) => p.failClosed).map((p) => JSON.stringify(p.name))
  if (closed.length === 0) return 'deciding in memory (insurance)'
  if (closed.length === policies.length) return 'answering 503 (limiter failClosed)'
  return `answering 503 for the failClosed policies (${closed.join(', ')}), deciding the others in memory (insurance)`
}

/**
 * Create the limiter from its configuration. Memory policies decide synchronously;
 * with a Redis store, one Lua script per request decides every GCRA policy, and
 * the memory buckets insure it while Redis is down.
 *
 * @example
 * const limiter = createLimiter(config.limiter, { conn, metrics, warn, exemptPaths: [], trustsProxy: false })
 * const result = limiter.check(req, client)
 */
export function createLimiter(config: LimiterConfig, deps: LimiterDeps): Limiter {
  const { conn, metrics, warn } = deps
  const styles: readonly HeaderStyle[] = config.headers === false ? [] : config.headers
  const onInsurance = (policy: string) => () => metrics?.insurance(policy)

  // Without metrics, decisions are counted nowhere.
  const counter = (policy: string, outcome: LimiterOutcome): { value: number } =>
    metrics?.limiterDecisions(policy, outcome) ?? { value: 0 }
  const compile = (name: string, p: PolicyConfig | LimiterConfig, path: string): Policy => {
    const keyFn = p.key ?? config.key
    const costFn = p.cost ?? config.cost
    const points = p.points
    const burst = p.burst ?? points
    const interval = (p.duration * 1000) / points
    const algorithm = p.algorithm ?? config.algorithm
    const blockDuration = p.blockDuration ?? 0
    const rate: Rate = { interval, tolerance: burst * interval, blockMs: blockDuration * 1000 }
    const item = policyItem(name, points, p.duration)
    return {
      name,
      points,
      duration: p.duration,
      policyItem: item,
      nameItem: sfString(name),
      policyField: Object.freeze(['ratelimit-policy', item] as const),
      rate,
      algorithm,
      enforce: (p.mode ?? config.mode) === 'enforce',
      failClosed: p.failClosed ?? config.failClosed,
      key:
        keyFn === undefined
          ? undefined
          : guardCallback(p.key === undefined ? 'limiter.key' : `${path}.key`, keyFn),
      cost:
        typeof costFn === 'function'
          ? guardCallback(p.cost === undefined ? 'limiter.cost' : `${path}.cost`, costFn)
          : costFn,
      counted: {
        allowed: counter(name, 'allowed'),
        limited: counter(name, 'limited'),
        blocked: counter(name, 'blocked'),
        observed: counter(name, 'observed'),
      },
      memory: new MemoryBuckets(rate, config.maxKeys),
      fixed:
        algorithm === 'fixed-window'
          ? new FixedWindow({ name, points, duration: p.duration, blockDuration }, conn, onInsurance(name))
          : undefined,
    }
  }

  const global = compile(config.name, config, 'limiter')
  const all: Policy[] = [global]
  const routeEntries: [string, Policy][] = []
  for (const [spec, value] of Object.entries(config.routes)) {
    const list = Array.isArray(value) ? value : [value]
    list.forEach((p, i) => {
      const name = p.name ?? (list.length === 1 ? spec : `${spec}#${i + 1}`)
      const policy = compile(name, p, `limiter.routes.${spec}${list.length === 1 ? '' : `.${i}`}`)
      all.push(policy)
      routeEntries.push([spec, policy])
    })
  }
  const names = all.map((p) => p.name)
  const duplicate = names.find((n, i) => names.indexOf(n) !== i)
  if (duplicate !== undefined)
    throw new AegisConfigError([
      {
        path: 'limiter.routes',
        message: `two policies are named ${JSON.stringify(duplicate)}; give one a name`,
      },
    ])
  const byName = new Map(all.map((p) => [p.name, p]))
  conn?.describeFallback(fallbackOf(all))
  const routes = createRouteMatcher(routeEntries)
  const onlyGlobal: readonly Policy[] = [global]

  const isExempt = createExemptions([...config.exempt, ...deps.exemptPaths])
  const listing = createListing(config.allow, config.deny)

  // "Every request comes from one address": the app is probably behind a proxy it does not trust.
  let streakKey = ''
  let streak = 0
  let streakDone = deps.trustsProxy
  const watchStreak = (client: ClientIdentity): void => {
    if (client.key === streakKey) {
      if (++streak < ONE_CLIENT_STREAK) return
      streakDone = true
      const range = parseAddress(client.ip)?.range() ?? 'unicast'
      if (range !== 'unicast')
        warn(
          WarningCodes.ONE_CLIENT,
          `The last ${ONE_CLIENT_STREAK} requests all came from ${client.ip} (${range}), so they share one rate limit. If a proxy or load balancer forwards them, set trustProxy to its address or hop count.`,
        )
    } else {
      streakKey = client.key
      streak = 1
    }
  }

  const keyOf = (p: Policy, req: IncomingMessage, client: ClientIdentity): string => {
    if (p.key === undefined) return client.key
    const k = p.key(req)
    return typeof k === 'string' && k !== '' ? k : client.key
  }
  const costOf = (p: Policy, req: IncomingMessage): number => {
    if (typeof p.cost === 'number') return p.cost
    const c = p.cost(req)
    return Number.isFinite(c) && c >= 0 ? c : 1
  }
  const usesRedisGcra = conn !== undefined
  const gcra = conn === undefined ? undefined : createRedisGcra(conn.client)

  // Scratch verdicts for synchronous decisions (one request at a time).
  const scratch: Verdict[] = all.map(newVerdict)
  const scratchKeys: string[] = all.map(() => '')
  const scratchCosts: number[] = all.map(() => 0)

  /** Report the decision: metrics, headers, and the rejection when an enforcing policy refused. */
  function conclude(policies: readonly Policy[], verdicts: readonly Verdict[]): LimitResult {
    let refused = false
    let banned = false
    let retryMs = 0
    let violated: string[] | undefined
    for (let i = 0; i < policies.length; i++) {
      const p = policies[i] as Policy
      const v = verdicts[i] as Verdict
      if (v.allowed) {
        p.counted.allowed.value++
        continue
      }
      if (!p.enforce) {
        p.counted.observed.value++
        continue
      }
      p.counted[v.banned ? 'blocked' : 'limited'].value++
      refused = true
      banned ||= v.banned
      if (v.retryMs > retryMs) retryMs = v.retryMs
      ;(violated ??= []).push(p.name)
    }
    const headers = limitHeaders(styles, policies, verdicts)
    return { headers, rejection: refused ? quotaExceeded(violated ?? [], retryMs, banned) : undefined }
  }

  /** A policy that admitted a refused request was not charged: report what it really holds. */
  function uncharged(p: Policy, v: Verdict, cost: number): void {
    v.remaining = Math.floor(v.remaining + cost)
    v.resetMs = Math.max(0, v.resetMs - cost * p.rate.interval)
  }

  /** Decide in memory, all or nothing: charged only if every enforcing policy conforms. */
  function decideInMemory(
    policies: readonly Policy[],
    keys: string[],
    costs: number[],
    out: Verdict[],
    now = performance.now(),
  ): void {
    let refused = false
    for (let i = 0; i < policies.length; i++) {
      const p = policies[i] as Policy
      const v = p.memory.check(keys[i] as string, costs[i] as number, now, out[i] as Verdict)
      if (!v.allowed && p.enforce) refused = true
    }
    for (let i = 0; i < policies.length; i++) {
      const p = policies[i] as Policy
      const v = out[i] as Verdict
      if (v.allowed) {
        // Each policy has its own buckets, so each remembers the bucket it just checked.
        if (!refused) p.memory.commit()
        else uncharged(p, v, costs[i] as number)
      } else if (p.rate.blockMs > 0 && !v.banned) p.memory.ban(keys[i] as string, now, v)
    }
  }

  async function decideShared(
    policies: readonly Policy[],
    keys: string[],
    costs: number[],
  ): Promise<LimitResult> {
    // Before the first connection, wait for it (bounded by `store.startupWait`): deciding in
    // memory now would give each instance the whole shared limit.
    if (conn?.starting === true) await conn.started
    const out = policies.map(newVerdict)
    const failedClosed = await decideWithStores(policies, keys, costs, out)
    if (failedClosed) return { headers: [], rejection: limiterUnavailable(1) }
    return conclude(policies, out)
  }

  /** Charged when every enforcing policy of the group admitted (the group decided all or nothing). */
  const groupCharged = (
    policies: readonly Policy[],
    idx: readonly number[],
    out: readonly Verdict[],
  ): boolean => idx.every((i) => !policies[i]!.enforce || out[i]!.allowed)

  /**
   * Redis for GCRA (one script per hash tag), rate-limiter-flexible for fixed windows,
   * memory for GCRA without Redis — and memory insurance for what Redis could not decide.
   * Returns true when a `failClosed` policy could not be decided.
   */
  async function decideWithStores(
    policies: readonly Policy[],
    keys: string[],
    costs: number[],
    out: Verdict[],
  ): Promise<boolean> {
    const local: number[] = [] // memory by configuration, or insurance while Redis is down
    const groups = new Map<string, number[]>()
    const fixed: number[] = []
    for (let i = 0; i < policies.length; i++) {
      const p = policies[i] as Policy
      if (p.fixed !== undefined) fixed.push(i)
      else if (conn === undefined || !conn.up) local.push(i)
      else {
        const k = keys[i] as string
        let g = groups.get(k)
        if (g === undefined) groups.set(k, (g = []))
        g.push(i)
      }
    }
    const insured = new Set<number>(conn === undefined ? [] : local)
    const charged = new Array<boolean>(policies.length).fill(false)
    const tasks: Promise<void>[] = []
    for (const [clientKey, idx] of groups) {
      const redisKeys = idx.map((i) =>
        bucketKey((conn as RedisConnection).prefix, clientKey, policies[i]!.name),
      )
      const task = (gcra as NonNullable<typeof gcra>)(
        'c',
        redisKeys,
        idx.map((i) => policies[i]!.rate),
        idx.map((i) => costs[i] as number),
        idx.map((i) => out[i] as Verdict),
        idx.map((i) => policies[i]!.enforce),
      ).then(
        () => {
          if (groupCharged(policies, idx, out)) for (const i of idx) charged[i] = out[i]!.allowed
        },
        (err: unknown) => {
          conn?.fail(err)
          for (const i of idx) insured.add(i)
          local.push(...idx)
        },
      )
      tasks.push(task)
    }
    for (const i of fixed) {
      const p = policies[i] as Policy
      tasks.push(
        (p.fixed as FixedWindow).consume(keys[i] as string, costs[i] as number, out[i] as Verdict).then(
          (v) => {
            charged[i] = v.allowed
          },
          (err: unknown) => {
            // rate-limiter-flexible answers from its insurance itself; an error here means both failed.
            conn?.fail(err)
            insured.add(i)
            local.push(i)
          },
        ),
      )
    }
    await Promise.all(tasks)
    if (local.length > 0) {
      const ps = local.map((i) => policies[i] as Policy)
      if (local.some((i) => insured.has(i) && policies[i]!.failClosed)) return true
      for (const i of insured) metrics?.insurance(policies[i]!.name)
      decideInMemory(
        ps,
        local.map((i) => keys[i] as string),
        local.map((i) => costs[i] as number),
        local.map((i) => out[i] as Verdict),
      )
      if (groupCharged(policies, local, out)) for (const i of local) charged[i] = out[i]!.allowed
    }
    // Stores decided apart: if one refused, give back what the others charged.
    const refused = policies.some((p, i) => p.enforce && !(out[i] as Verdict).allowed)
    if (refused) {
      const refunds: Promise<void>[] = []
      for (let i = 0; i < policies.length; i++) {
        if (charged[i])
          refunds.push(adjustOne(policies[i] as Policy, keys[i] as string, -(costs[i] as number)))
      }
      await Promise.allSettled(refunds)
    }
    return false
  }

  async function adjustOne(p: Policy, key: string, points: number): Promise<void> {
    if (conn?.starting === true) await conn.started
    if (p.fixed !== undefined) return p.fixed.adjust(key, points)
    if (conn !== undefined && conn.up && gcra !== undefined) {
      try {
        await gcra('a', [bucketKey(conn.prefix, key, p.name)], [p.rate], [points], [newVerdict()], [true])
        return
      } catch (err) {
        conn.fail(err)
      }
    }
    p.memory.adjust(key, points, performance.now())
  }

  function policiesOf(req: IncomingMessage): readonly Policy[] {
    if (routes.size === 0) return onlyGlobal
    const matched = routes.match(req.method ?? 'GET', req.url ?? '/')
    return matched.length === 0 ? onlyGlobal : [global, ...matched]
  }

  // Decided once: only route matches build new policy lists, and those are rare.
  const globalIsAsync = usesRedisGcra || global.fixed !== undefined
  const sharedOrFixed = (policies: readonly Policy[]): boolean =>
    policies === onlyGlobal ? globalIsAsync : usesRedisGcra || policies.some((p) => p.fixed !== undefined)

  const adaptive = config.adaptive === false ? undefined : createAdaptiveLimiter(config.adaptive)
  const loop =
    config.shed === false
      ? undefined
      : createLoopMonitor({
          maxLagMs: config.shed.maxEventLoopDelayMs,
          sampleIntervalMs: config.shed.sampleIntervalMs,
        })
  const atConcurrencyLimit = overloaded('concurrency', 1)
  const shedAnswers = new Map<number, Rejection>()
  const shedAnswer = (retryAfter: number): Rejection => {
    let r = shedAnswers.get(retryAfter)
    if (r === undefined) shedAnswers.set(retryAfter, (r = overloaded('event-loop', retryAfter)))
    return r
  }
  const NOTHING: LimitResult = Object.freeze({ headers: [], rejection: undefined })
  const ADMITTED_WITH_SLOT: LimitResult = Object.freeze({ headers: [], rejection: undefined, acquired: true })

  /** A decided request: a refusal gives its adaptive slot back at once. */
  const withSlot = (result: LimitResult, acquired: boolean): LimitResult => {
    if (!acquired) return result
    if (result.rejection !== undefined) {
      adaptive?.ignore()
      return result
    }
    return { headers: result.headers, rejection: undefined, acquired: true }
  }

  function check(
    req: IncomingMessage,
    client: ClientIdentity,
    now = performance.now(),
  ): LimitResult | Promise<LimitResult> | undefined {
    const policies = policiesOf(req)
    if (policies === onlyGlobal && isExempt(req.url ?? '/')) return undefined
    let listed: Listing = 0
    if (listing !== undefined) {
      listed = listing(client.ip)
      if (listed === 2) return { headers: [], rejection: clientDenied }
    }
    // Shedding protects the process: it comes before any bucket is charged, allowlist or not.
    if (loop !== undefined && loop.overloaded()) {
      return { headers: [], rejection: shedAnswer(loop.retryAfterSeconds) }
    }
    let acquired = false
    if (adaptive !== undefined) {
      if (!adaptive.tryAcquire()) {
        return { headers: [], rejection: atConcurrencyLimit }
      }
      acquired = true
    }
    if (listed === 1) return acquired ? ADMITTED_WITH_SLOT : NOTHING
    if (!streakDone) watchStreak(client)
    const n = policies.length
    try {
      for (let i = 0; i < n; i++) {
        const p = policies[i] as Policy
        scratchKeys[i] = keyOf(p, req, client)
        scratchCosts[i] = costOf(p, req)
      }
    } catch (err) {
      // A throwing key() or cost(): the request is answered 500 and never holds a slot.
      if (acquired) adaptive?.ignore()
      throw err
    }
    if (sharedOrFixed(policies)) {
      const decided = decideShared(policies, scratchKeys.slice(0, n), scratchCosts.slice(0, n))
      return acquired ? decided.then((r) => withSlot(r, true)) : decided
    }
    const out = n === scratch.length ? scratch : scratch.slice(0, n)
    decideInMemory(policies, scratchKeys, scratchCosts, out, now)
    return withSlot(conclude(policies, out), acquired)
  }

  const select = (policy: string | undefined): Policy[] => {
    if (policy === undefined) return all
    const p = byName.get(policy)
    if (p === undefined)
      throw new AegisArgumentError(`limiter: no policy named ${JSON.stringify(policy)}`, ErrorCodes.NOT_FOUND)
    return [p]
  }

  async function adjust(req: IncomingMessage, points: number, policy: string | undefined): Promise<void> {
    // Fastify's request wraps the Node one.
    const raw = (req as { raw?: IncomingMessage }).raw ?? req
    const client = deps.clientOf(raw)
    if (client === undefined)
      throw new AegisArgumentError('limiter: penalty()/reward() need a request Aegis admitted')
    const applicable = policiesOf(raw)
    const chosen = policy === undefined ? applicable : select(policy)
    await Promise.all(chosen.map((p) => adjustOne(p, keyOf(p, raw, client), points)))
  }

  return {
    check,
    policies: names,
    release(latencyMs, ok) {
      if (adaptive === undefined) return
      adaptive.release(latencyMs, ok)
      metrics?.adaptiveLimit(adaptive.limit)
    },
    get concurrencyLimit() {
      return adaptive?.limit
    },
    close() {
      loop?.close()
    },
    penalty: (req, points, policy) => adjust(req as IncomingMessage, Math.abs(points), policy),
    reward: (req, points, policy) => adjust(req as IncomingMessage, -Math.abs(points), policy),
    async get(key, policy) {
      const p = select(policy ?? global.name)[0] as Policy
      const scratchVerdict = newVerdict()
      let v: Verdict | undefined
      if (conn?.starting === true) await conn.started
      if (p.fixed !== undefined) v = await p.fixed.get(key, scratchVerdict)
      else if (conn !== undefined && conn.up && gcra !== undefined) {
        try {
          await gcra('g', [bucketKey(conn.prefix, key, p.name)], [p.rate], [0], [scratchVerdict], [true])
          v = scratchVerdict
          if (!v.banned && v.resetMs <= 0) v = undefined
          else if (!v.banned && v.remaining === 0)
            v.retryMs = Math.max(0, v.resetMs - p.rate.tolerance + p.rate.interval)
        } catch (err) {
          conn.fail(err)
          v = p.memory.get(key, performance.now(), scratchVerdict)
        }
      } else v = p.memory.get(key, performance.now(), scratchVerdict)
      if (v === undefined) return undefined
      return {
        policy: p.name,
        limit: p.points,
        remaining: v.remaining,
        resetMs: v.resetMs,
        retryMs: v.banned ? v.retryMs : v.remaining > 0 ? 0 : v.retryMs,
        banned: v.banned,
      }
    },
    async reset(key, policy) {
      const ps = select(policy)
      if (conn?.starting === true) await conn.started
      const tasks: Promise<unknown>[] = []
      for (const p of ps) {
        p.memory.delete(key)
        if (p.fixed !== undefined) tasks.push(p.fixed.delete(key))
        else if (conn !== undefined) tasks.push(conn.client.del(bucketKey(conn.prefix, key, p.name)))
      }
      await Promise.all(tasks)
    },
  }
}
