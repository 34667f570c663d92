/*
 * The one seam between the limiter and whatever holds its buckets. Shaped after
 * express-rate-limit's `Store` (source/types.ts): a few methods that return
 * `T | Promise<T>`, so the memory store answers synchronously and a request
 * limited in memory never waits for a microtask, while Redis answers later.
 * The limiter calls one store object; which backend that is (memory, Redis,
 * a Cluster, fixed windows, the insurance while Redis is down) is decided once,
 * in stores/index.ts.
 */
import { newVerdict, type Rate, type Verdict } from './gcra.js'

export type { Rate, Verdict } from './gcra.js'

/** What a store needs to know of one policy; the limiter builds them once. */
export interface StorePolicy {
  /** Position in the list the store was built with: stores keep per-policy state in an array by it. */
  readonly index: number
  readonly name: string
  /** Requests (points) allowed per `duration`. */
  readonly points: number
  /** The window, in seconds. */
  readonly duration: number
  /** The GCRA arithmetic (and `blockMs`, the ban after a refusal, which every store honours). */
  readonly rate: Rate
  /** `false` in `observe` mode: the policy reports but never refuses the request. */
  readonly enforce: boolean
  /** While the shared store is down, answer 503 instead of deciding in memory. */
  readonly failClosed: boolean
}

/** The verdicts of one request, `verdicts[i]` for `policies[i]`; `undefined`: undecidable, fail closed (503). */
export type Decision = readonly Verdict[] | undefined

/**
 * Where a limiter keeps its buckets. Every method may answer synchronously (memory) or
 * with a promise (Redis); callers handle both.
 *
 * @example
 * const store = createMemoryGcraStore(policies, { maxKeys: 100_000 })
 * const verdicts = store.consume(policies, ['203.0.113.7'], [1], performance.now())
 * if (verdicts instanceof Promise) await verdicts
 */
export interface RateLimitStore {
  /**
   * Decide one request: `cost[i]` points of `keys[i]`'s bucket under `policies[i]`. All or
   * nothing: the policies that admit are charged only when every enforcing one admits; one
   * that refuses bans its key for `rate.blockMs` (when set). `keys` and `costs`
   * may be longer than `policies` (the caller's scratch) and are read before this returns: a
   * store that needs them after an await copies them. The verdicts are written into `out`
   * when given, else into an array of the store's own, which a synchronous store reuses on
   * its next call (read it at once). `now` is `performance.now()` at admission; a shared
   * store uses its server's clock instead.
   */
  consume(
    policies: readonly StorePolicy[],
    keys: readonly string[],
    costs: readonly number[],
    now: number,
    out?: Verdict[],
  ): Decision | Promise<Decision>
  /** Charge (`points` > 0, a penalty) or give back (< 0, a reward) points, whatever the bucket holds. */
  adjust(policy: StorePolicy, key: string, points: number): void | Promise<void>
  /** The state of `key` into `out`, spending nothing; `undefined` when its bucket is full (untouched). */
  get(policy: StorePolicy, key: string, out: Verdict): Verdict | undefined | Promise<Verdict | undefined>
  /** Forget `key`: its bucket and any ban. */
  reset(policy: StorePolicy, key: string): void | Promise<void>
}

/** Every enforcing policy of a decided batch admitted: the batch was charged. */
export function conforms(policies: readonly StorePolicy[], verdicts: readonly Verdict[]): boolean {
  for (let i = 0; i < policies.length; i++)
    if ((policies[i] as StorePolicy).enforce && !(verdicts[i] as Verdict).allowed) return false
  return true
}

/** One part of a batch decided on its own: the positions it holds, and the store that decides them. */
export interface Part {
  readonly store: RateLimitStore
  readonly idx: readonly number[]
}

/**
 * Split the first `n` positions of a batch into parts by `group(i)`, each decided by `storeOf` its group.
 *
 * @example
 * partsBy(policies.length, (i) => keys[i], () => store) // one part per client key
 */
export function partsBy<K>(
  n: number,
  group: (i: number) => K,
  storeOf: (group: K) => RateLimitStore,
): Part[] {
  const groups = new Map<K, number[]>()
  for (let i = 0; i < n; i++) {
    const g = group(i)
    const idx = groups.get(g)
    if (idx === undefined) groups.set(g, [i])
    else idx.push(i)
  }
  const parts: Part[] = []
  for (const [g, idx] of groups) parts.push({ store: storeOf(g), idx })
  return parts
}

/**
 * `decideApart` over parts of one store, grouped by `group(i)`: a store that splits a batch
 * itself (one Redis script per client key, one counter per fixed-window policy).
 *
 * @example
 * return splitBy(store, (i) => keys[i], policies, keys, costs, now, out)
 */
export function splitBy(
  store: RateLimitStore,
  group: (i: number) => unknown,
  policies: readonly StorePolicy[],
  keys: readonly string[],
  costs: readonly number[],
  now: number,
  out?: Verdict[],
): Promise<Decision> {
  const parts = partsBy(policies.length, group, () => store)
  return decideApart(parts, policies, keys, costs, now, out)
}

/**
 * Decide a batch in parts that each charge all or nothing (one Redis script per hash slot,
 * one counter per fixed-window policy, one store per algorithm), and keep the whole all or
 * nothing: when a part refuses, fails closed or fails, what the others charged is given
 * back. A failed part rejects the whole once the refunds are done.
 *
 * @example
 * // Two client keys: two scripts, each on its own Cluster slot.
 * return decideApart([{ store, idx: [0] }, { store, idx: [1] }], policies, keys, costs, now, out)
 */
export async function decideApart(
  parts: readonly Part[],
  policies: readonly StorePolicy[],
  keys: readonly string[],
  costs: readonly number[],
  now: number,
  out: Verdict[] = policies.map(newVerdict),
): Promise<Decision> {
  // Sub-batches are built before the first await: `keys` and `costs` may be the caller's scratch.
  const batches = parts.map(({ store, idx }) => {
    const ps = idx.map((i) => policies[i] as StorePolicy)
    const ks = idx.map((i) => keys[i] as string)
    const cs = idx.map((i) => costs[i] as number)
    const vs = idx.map((i) => out[i] as Verdict)
    return { store, ps, ks, cs, decided: store.consume(ps, ks, cs, now, vs) }
  })
  let failed = false
  let failure: unknown
  let undecided = false
  const charged: { store: RateLimitStore; policy: StorePolicy; key: string; cost: number }[] = []
  await Promise.all(
    batches.map(async ({ store, ps, ks, cs, decided }) => {
      try {
        const d = await decided
        if (d === undefined) undecided = true
        else if (conforms(ps, d))
          for (let j = 0; j < ps.length; j++)
            if ((d[j] as Verdict).allowed)
              charged.push({
                store,
                policy: ps[j] as StorePolicy,
                key: ks[j] as string,
                cost: cs[j] as number,
              })
      } catch (err) {
        if (!failed) failure = err
        failed = true
      }
    }),
  )
  if (charged.length > 0 && (failed || undecided || !conforms(policies, out)))
    await Promise.allSettled(charged.map(async (c) => c.store.adjust(c.policy, c.key, -c.cost)))
  if (failed) throw failure
  return undecided ? undefined : out
}
