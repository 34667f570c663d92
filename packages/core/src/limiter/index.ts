import type { IncomingMessage } from 'node:http'
import { parseAddress } from '../client/index.js'
import { AegisArgumentError, AegisConfigError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import { guardCallback } from '../kernel/callbacks.js'
import type { LimiterOutcome, Metrics } from '../metrics/index.js'
import type { HeaderList, ClientIdentity, Rejection } from '../kernel/types.js'
import type { RedisConnection } from '../store/index.js'
import type { Warn } from '../kernel/warnings.js'
import type { EventBus } from '../kernel/events.js'
import './events.js'
import {
  clientDenied,
  limitHeaders,
  limiterUnavailable,
  policyItem,
  quotaExceeded,
  sfString,
  type HeaderStyle,
  type PolicyInfo,
} from './answers.js'
import type { OverloadApi } from '../overload/index.js'
import { createExemptions, createListing, type Listing } from './lists.js'
import { newVerdict, type Rate, type Verdict } from './gcra.js'
import type { CostFunction, KeyFunction, LimiterConfig, PolicyConfig } from './options.js'
import { createRouteMatcher } from './routes.js'
import type { Decision } from './store.js'
import { createLimiterStore, type AlgorithmPolicy } from './stores/index.js'
import { createTopKeys, SAMPLE_EVERY, TOP_CAPACITY } from './top.js'

export { limiterSchema, limiterSection, policySchema } from './options.js'
export type { LimiterOptions, LimiterConfig, PolicyOptions, KeyFunction, CostFunction } from './options.js'
export type { Verdict } from './gcra.js'

/** A compiled policy: what its store needs, what its answers need, and how a request is counted. */
interface Policy extends AlgorithmPolicy, PolicyInfo {
  readonly key: KeyFunction | undefined
  readonly cost: number | CostFunction
  /** Decision counters by outcome (found once; no lookup per request). */
  readonly counted: Record<LimiterOutcome, { value: number }>
}

/** The rate-limit verdict of one request: header fields to add, and a rejection when refused. */
export interface LimitResult {
  readonly headers: HeaderList
  readonly rejection: Rejection | undefined
  /** @deprecated Concurrency slots are the overload engine's now (the pipeline gives them back); never set. */
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

/** What `limiter.top()` ranks by: refusals in the last window, or the share of the limit used now. */
export type TopBy = 'limited' | 'share'

/** What `limiter.top()` is asked. */
export interface TopOptions {
  /** `limited` (default): most refused in the last `windowMs`; `share`: largest share of the limit used now. */
  readonly by?: TopBy
  /** How many keys, 1 to 100 (default 10). */
  readonly n?: number
  /** One policy's keys (default: every policy's, ranked together). */
  readonly policy?: string
}

/**
 * One key of `limiter.top()`: how often it was refused lately, and its state now (as
 * `get()` reports it). A key whose bucket is full shows `share: 0` and `remaining` = its burst.
 */
export interface TopKey {
  readonly policy: string
  /** The key (a client key such as `203.0.113.7`, or what the policy's `key()` returned). */
  readonly key: string
  /**
   * Refusals in the last `windowMs` (a policy in `observe` mode counts those it would have
   * made). An estimate from a bounded summary: never below the true count, at most
   * `limitedError` above it (0 while fewer than 100 keys of the policy were refused).
   */
  readonly limited: number
  readonly limitedError: number
  /** The share of the bucket used now, 0 to 1: 1 − remaining ÷ burst (burst: `points` unless set). */
  readonly share: number
  readonly limit: number
  readonly remaining: number
  readonly resetMs: number
  readonly retryMs: number
  readonly banned: boolean
}

/** The answer of `limiter.top()`: plain JSON. */
export interface LimiterTop {
  readonly by: TopBy
  /** The policy asked for, or `null`: every policy's keys. */
  readonly policy: string | null
  /** The window `limited` counts over, in milliseconds. */
  readonly windowMs: number
  /**
   * `instance`: what this instance saw (with Redis, each instance counts its own refusals and
   * samples its own requests; the states shown come from the shared store).
   */
  readonly scope: 'instance'
  /** One admitted request in this many is looked at for `share` (every refusal is). */
  readonly sampleEvery: number
  /** Most first. */
  readonly keys: TopKey[]
}

/** The window `TopKey.limited` counts over. */
const TOP_WINDOW_MS = 60_000

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
  /**
   * The heavy hitters: the keys refused most in the last minute (`by: 'limited'`), or using
   * the largest share of their limit now (`by: 'share'`), each with its state from the store.
   * Counted by this instance from its own traffic, in bounded memory (100 keys per policy);
   * throws `AegisArgumentError` for a bad option or an unknown policy.
   *
   * @example
   * const { keys } = await aegis.limiter.top({ by: 'limited', n: 5 })
   * for (const k of keys) console.log(k.key, k.limited, k.share)
   */
  top(options?: TopOptions): Promise<LimiterTop>
  /** Give back an adaptive-concurrency slot by hand (the overload engine's; the pipeline does it for admitted requests). */
  release(latencyMs: number, ok: boolean): void
  /** The adaptive concurrency limit in force, when `limiter.adaptive` is on (the overload engine's). */
  readonly concurrencyLimit: number | undefined
  /** Names of the configured policies. */
  readonly policies: readonly string[]
  /** Release what the limiter holds (nothing today: kept for callers of the public API). */
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
  /** The overload engine, whose slot release and limit `shield.limiter` has always offered. */
  readonly overload?: OverloadApi | undefined
  /** What a request costs times its cost option (the anomaly engine's throttle): 1 when absent. */
  readonly weightOf?: ((req: IncomingMessage) => number) | undefined
  /** Where refusals are told (`limiter.blocked`), while something listens. */
  readonly events?: EventBus | undefined
}

const ONE_CLIENT_STREAK = 1_000

/**
 * Create the limiter from its configuration. It talks to one `RateLimitStore`
 * (stores/index.ts picks it): memory decides synchronously; with a Redis store, one
 * Lua script per request decides every GCRA policy of a client key, and memory
 * insures it while Redis is down.
 *
 * @example
 * const limiter = createLimiter(config.limiter, { conn, metrics, warn, exemptPaths: [], trustsProxy: false })
 * const result = limiter.check(req, client)
 */
export function createLimiter(config: LimiterConfig, deps: LimiterDeps): Limiter {
  const { conn, metrics, warn } = deps
  const styles: readonly HeaderStyle[] = config.headers === false ? [] : config.headers

  // Without metrics, decisions are counted nowhere.
  const counter = (policy: string, outcome: LimiterOutcome): { value: number } =>
    metrics?.limiterDecisions(policy, outcome) ?? { value: 0 }
  const all: Policy[] = []
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
    const policy: Policy = {
      index: all.length,
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
    }
    all.push(policy)
    return policy
  }

  const global = compile(config.name, config, 'limiter')
  const routeEntries: [string, Policy][] = []
  for (const [spec, value] of Object.entries(config.routes)) {
    const list = Array.isArray(value) ? value : [value]
    list.forEach((p, i) => {
      const name = p.name ?? (list.length === 1 ? spec : `${spec}#${i + 1}`)
      routeEntries.push([spec, compile(name, p, `limiter.routes.${spec}${list.length === 1 ? '' : `.${i}`}`)])
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
  const store = createLimiterStore(all, conn, {
    maxKeys: config.maxKeys,
    onInsurance: (p) => metrics?.insurance(p.name),
  })
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
  // Scratch keys and costs of the request being decided (a store reads them before it returns).
  const scratchKeys: string[] = all.map(() => '')
  const scratchCosts: number[] = all.map(() => 0)
  const UNAVAILABLE: LimitResult = Object.freeze({ headers: [], rejection: limiterUnavailable(1) })

  // What the last `conclude` refused for: read at once by `told`, in the same turn.
  let refusedBy: readonly string[] = []
  let refusedBanned = false
  const { events } = deps
  /** Tell the bus of a refusal, while something listens (the audit trail counts them). */
  function told(req: IncomingMessage, client: ClientIdentity, result: LimitResult): LimitResult {
    // A fail-closed 503 is the store's outage, not the client's doing.
    if (result.rejection === undefined || result === UNAVAILABLE) return result
    if (events === undefined || !events.has('limiter.blocked')) return result
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    events.emit('limiter.blocked', {
      client: client.key,
      reason: result.rejection === clientDenied ? 'denied' : refusedBanned ? 'banned' : 'limited',
      policies: result.rejection === clientDenied ? [] : refusedBy,
      status: result.rejection.status,
      path: q < 0 ? url : url.slice(0, q),
    })
    return result
  }

  const top = createTopKeys(all.length, TOP_WINDOW_MS)
  let sampleIn = SAMPLE_EVERY
  const burstOf = (p: Policy): number => p.rate.tolerance / p.rate.interval
  const shareOf = (p: Policy, remaining: number): number =>
    Math.min(1, Math.max(0, 1 - remaining / burstOf(p)))

  /**
   * Report the decision: metrics, headers, the heavy hitters (every refusal, one admission
   * in `SAMPLE_EVERY`), and the rejection when an enforcing policy refused.
   */
  function conclude(
    policies: readonly Policy[],
    verdicts: readonly Verdict[],
    keys: readonly string[],
    now: number,
  ): LimitResult {
    let refused = false
    let banned = false
    let retryMs = 0
    let violated: string[] | undefined
    for (let i = 0; i < policies.length; i++) {
      const p = policies[i] as Policy
      const v = verdicts[i] as Verdict
      if (v.allowed) {
        p.counted.allowed.value++
        if (--sampleIn === 0) {
          sampleIn = SAMPLE_EVERY
          top.sampled(p.index, keys[i] as string, shareOf(p, v.remaining))
        }
        continue
      }
      top.refused(p.index, keys[i] as string, now)
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
    if (refused) {
      refusedBy = violated ?? []
      refusedBanned = banned
    }
    return { headers, rejection: refused ? quotaExceeded(violated ?? [], retryMs, banned) : undefined }
  }

  /** The limiter's answer to a store's decision (`undefined`: a failClosed policy has no store). */
  const concluded = (
    policies: readonly Policy[],
    decision: Decision,
    keys: readonly string[],
    now: number,
  ): LimitResult => (decision === undefined ? UNAVAILABLE : conclude(policies, decision, keys, now))

  function policiesOf(req: IncomingMessage): readonly Policy[] {
    if (routes.size === 0) return onlyGlobal
    const matched = routes.match(req.method ?? 'GET', req.url ?? '/')
    return matched.length === 0 ? onlyGlobal : [global, ...matched]
  }

  const NOTHING: LimitResult = Object.freeze({ headers: [], rejection: undefined })

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
      if (listed === 2) return told(req, client, { headers: [], rejection: clientDenied })
    }
    if (listed === 1) return NOTHING
    if (!streakDone) watchStreak(client)
    const n = policies.length
    // A throwing key() or cost() is answered 500 by the pipeline.
    const weight = deps.weightOf === undefined ? 1 : deps.weightOf(req)
    for (let i = 0; i < n; i++) {
      const p = policies[i] as Policy
      scratchKeys[i] = keyOf(p, req, client)
      scratchCosts[i] = costOf(p, req) * weight
    }
    const decided = store.consume(policies, scratchKeys, scratchCosts, now)
    if (decided instanceof Promise) {
      // The scratch keys are the next request's by the time the store answers.
      const keys = scratchKeys.slice(0, n)
      return decided.then((d) => told(req, client, concluded(policies, d, keys, now)))
    }
    return told(req, client, concluded(policies, decided, scratchKeys, now))
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
    await Promise.all(chosen.map(async (p) => store.adjust(p, keyOf(p, raw, client), points)))
  }

  return {
    check,
    policies: names,
    release: (latencyMs, ok) => deps.overload?.release(latencyMs, ok),
    get concurrencyLimit() {
      return deps.overload?.concurrencyLimit
    },
    close() {
      // The limiter holds no timer: the event-loop monitor is the overload engine's.
    },
    penalty: (req, points, policy) => adjust(req as IncomingMessage, Math.abs(points), policy),
    reward: (req, points, policy) => adjust(req as IncomingMessage, -Math.abs(points), policy),
    async get(key, policy) {
      const p = select(policy ?? global.name)[0] as Policy
      const v = await store.get(p, key, newVerdict())
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
      await Promise.all(select(policy).map(async (p) => store.reset(p, key)))
    },
    async top(options = {}) {
      if (typeof options !== 'object' || options === null)
        throw new AegisArgumentError('limiter.top() takes an object: { by, n, policy }')
      const { by = 'limited', n = 10, policy } = options
      if (by !== 'limited' && by !== 'share')
        throw new AegisArgumentError(`limiter.top(): by is 'limited' or 'share', not ${JSON.stringify(by)}`)
      if (!Number.isInteger(n) || n < 1 || n > TOP_CAPACITY)
        throw new AegisArgumentError(`limiter.top(): n is an integer from 1 to ${TOP_CAPACITY}`)
      const chosen = select(policy)
      const now = performance.now()
      type Candidate = { p: Policy; key: string; limited: number; limitedError: number }
      let candidates: Candidate[] = []
      for (const p of chosen) {
        const t = top.policy(p.index)
        const limited = t.limited(now)
        if (by === 'limited')
          for (const [key, c] of limited) candidates.push({ p, key, limited: c.count, limitedError: c.error })
        else
          for (const key of t.shares.keys()) {
            const c = limited.get(key)
            candidates.push({ p, key, limited: c?.count ?? 0, limitedError: c?.error ?? 0 })
          }
      }
      if (by === 'limited') {
        candidates = candidates.filter((c) => c.limited > 0)
        candidates.sort((a, b) => b.limited - a.limited || (a.key < b.key ? -1 : 1))
        candidates = candidates.slice(0, n)
      }
      // The state now, from the store: exact for every key shown, whatever the sample said.
      const keys = await Promise.all(
        candidates.map(async ({ p, key, limited, limitedError }): Promise<TopKey> => {
          const v = await store.get(p, key, newVerdict())
          const burst = Math.floor(burstOf(p))
          return {
            policy: p.name,
            key,
            limited,
            limitedError,
            share: v === undefined ? 0 : shareOf(p, v.remaining),
            limit: p.points,
            remaining: v === undefined ? burst : v.remaining,
            resetMs: v?.resetMs ?? 0,
            retryMs: v === undefined ? 0 : v.banned ? v.retryMs : v.remaining > 0 ? 0 : v.retryMs,
            banned: v?.banned ?? false,
          }
        }),
      )
      const ranked =
        by === 'limited'
          ? keys
          : keys
              .filter((k) => k.share > 0)
              .sort((a, b) => b.share - a.share || b.limited - a.limited || (a.key < b.key ? -1 : 1))
              .slice(0, n)
      return {
        by,
        policy: policy ?? null,
        windowMs: TOP_WINDOW_MS,
        scope: 'instance',
        sampleEvery: SAMPLE_EVERY,
        keys: ranked,
      }
    },
  }
}
