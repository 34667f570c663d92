/**
 * The anomaly engine: per-client features (features.ts), guard rules (rules.ts) and an
 * Isolation Forest grown off the request path (trainer.ts) give each client one score
 * with its reasons. `observe` updates a client after each of its responses; `admit`
 * enforces what was decided — a block, a heavier limiter cost — and adds the debugging
 * field. In `observe` mode (the default) it only scores, counts and reports.
 */
import type { IncomingMessage } from 'node:http'
import { LRUCache } from 'lru-cache'
import { inRanges, maskAddress, parseAddress, parseRanges } from '../client/index.js'
import type { Engine } from '../kernel/engine.js'
import { AegisArgumentError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import type { EventBus } from '../kernel/events.js'
import type { Logger } from '../kernel/logger.js'
import { IETF_PROBLEM, problem } from '../kernel/problem.js'
import type { AdmittedState, ClientIdentity, Rejection } from '../kernel/types.js'
import { pathOf } from '../kernel/url.js'
import type { Warn } from '../kernel/warnings.js'
import { rejectionProblem } from '../options/reject.js'
import type { Metrics } from '../metrics/index.js'
import type { RedisConnection } from '../store/index.js'
import {
  createCampaignDetector,
  prefixOf,
  type Campaign,
  type CampaignDetector,
  type CampaignScope,
} from './campaigns.js'
import { createCrawlerVerifier, dnsLookups, type CrawlerVerifier } from './crawlers.js'
import { createAnomalyBus, type AnomalyBus } from './shared.js'
import { ClientTable, DIMENSIONS, F, FEATURES, firstHeader, type Seen } from './features.js'
import { anomalyMetrics, type AnomalyMetrics } from './metrics.js'
import type { AnomalyConfig, CampaignInfo } from './options.js'
import { checkRules, people, RULES, ruleSettings } from './rules.js'
import { createTrainer, SNAPSHOT_MS, type Model } from './trainer.js'
// The bare import keeps the events' declarations in the bundled types (the named one is elided there).
import './events.js'
import { logAnomalyEvents } from './events.js'

/** A client's features are scored at most this often (or every `SCORE_EVERY` requests). */
const SCORE_MS = 1000
const SCORE_EVERY = 256
/** The model speaks of a client only after this many requests: one or two say nothing of a rhythm. */
const MIN_REQUESTS = 5
/** Verdicts a client claiming to be a crawler is spared while DNS checks the claim. */
const CRAWLER_GRACE = 3
/** Consecutive scorings over the threshold before the model blocks (a rule blocks at once). */
const MODEL_STRIKES = 2
/** A block's strikes are forgotten a day after it ended. */
const STRIKES_FORGOTTEN_MS = 86_400_000
/** Reasons a verdict names from the model: the features that isolated the client most. */
const TOP_FEATURES = 3
/** The row's `RULE` of a client taking part in a campaign (the rules are 1 to `RULES.length`). */
const CAMPAIGN = RULES.length + 1
/** Failures in a row on a route under a credential-stuffing campaign that catch a participant. */
const CAMPAIGN_FAILURES = 3

/** A block in force (or ended, remembered for its strikes). */
interface Block {
  readonly until: number
  readonly strikes: number
  readonly reasons: readonly string[]
}

/** A client, as `top()` and `explain()` describe it. */
export interface AnomalyClient {
  /** The identity (the client key, or the header's or cookie's value). */
  readonly key: string
  readonly score: number
  /** `rule:<name>` for a rule that fired, `model:<feature>` for the features that isolated it most. */
  readonly reasons: readonly string[]
  readonly requests: number
  readonly firstSeen: number
  readonly lastSeen: number
  readonly flagged: boolean
  /** When its block ends (the engine's clock), if blocked. */
  readonly blockedUntil: number | undefined
  /** Its features, by name (`rate_10s`: requests per minute over about 10 s, log1p'd, …). */
  readonly features: Readonly<Record<(typeof FEATURES)[number], number>>
}

/** What the engine reports of itself. */
export interface AnomalyStats {
  readonly mode: AnomalyConfig['mode']
  readonly clients: number
  readonly blocked: number
  /** Client snapshots held to grow the next model from. */
  readonly snapshots: number
  /** The model in use: when it was grown, on how many snapshots, in how many ms; `undefined` before the first. */
  readonly model: { readonly at: number; readonly rows: number; readonly ms: number } | undefined
  /** Whether the model's verdicts count yet (after the warm-up). */
  readonly warm: boolean
}

/** `aegis.anomaly`: what the admin API and the dashboard read, and an operator's own verdicts. */
export interface AnomalyApi {
  /** The `n` most anomalous clients seen, highest score first, with their reasons. */
  top(n?: number): AnomalyClient[]
  /** One client by key, or `undefined` if it is not remembered. */
  explain(key: string): AnomalyClient | undefined
  /** Block a client for `ms` (the cool-down by default), as a verdict would. */
  block(key: string, ms?: number): void
  /** Lift a client's block (its strikes are forgotten too). */
  unblock(key: string): boolean
  stats(): AnomalyStats
}

export interface AnomalyDeps {
  readonly metrics: Metrics | undefined
  readonly events: EventBus
  readonly logger: Logger | undefined
  /** The answer to a user callback that threw (the `challenge` hook). */
  readonly failure: (err: unknown) => Rejection
  /** Warn once per code (a `challenge` answer that cannot be written). */
  readonly warn: Warn
  /** The shared store: blocks and campaigns are published there when `shared`. */
  readonly store: RedisConnection | undefined
  /** Verifies crawlers' addresses (tests pass one on their own DNS server); built from the options otherwise. */
  readonly crawlers?: CrawlerVerifier | undefined
}

/** What a `challenge` hook sees, and where a campaign ends (the engine's clock). */
interface LiveCampaign extends CampaignInfo {
  readonly until: number
}

/** Where a request's limiter weight is left for the limiter (throttle mode). */
const WEIGHT = Symbol('aegis.anomaly.weight')
type Weighted = IncomingMessage & { [WEIGHT]?: number }

/**
 * @example
 * const engine = anomalyEngine(parseOptions({ anomaly: { mode: 'block' } }).anomaly, deps)
 */
export function anomalyEngine(config: AnomalyConfig, deps: AnomalyDeps): Engine & { api: AnomalyApi } {
  const { mode, threshold } = config
  const clock = config.clock ?? Date.now
  const rules = ruleSettings(config.rules)
  const table = new ClientTable(config.maxClients, rules.flood?.seconds ?? 1)
  const blocks = new LRUCache<string, Block>({ max: config.maxClients })
  let model: Model | undefined
  const metrics: AnomalyMetrics | undefined =
    deps.metrics &&
    anomalyMetrics(deps.metrics, {
      clients: () => table.size,
      blocked: () => blockedNow(clock()),
      modelAge: () => (model === undefined ? undefined : clock() - model.at),
    })
  const blockedNow = (now: number): number => {
    let n = 0
    for (const b of blocks.values()) if (b.until > now) n++
    return n
  }
  const allowRanges = parseRanges(config.allow.addresses)
  const apiKeys = config.allow.apiKeys && {
    header: config.allow.apiKeys.header,
    keys: new Set(config.allow.apiKeys.keys),
  }
  const scratch = new Float64Array(DIMENSIONS)
  const shares = new Float64Array(DIMENSIONS)
  // One object for every update: the table reads it synchronously and keeps nothing.
  const seen: { -readonly [K in keyof Seen]: Seen[K] } = {
    now: 0,
    path: '/',
    route: '',
    status: 0,
    method: undefined,
    rawHeaders: NO_HEADERS,
  }
  // Reasons of each remembered client, by row (what `top()` and the header show).
  const reasons: (readonly string[] | undefined)[] = []
  // Each row's /24 or /48, for the campaign detector (parsed once per client).
  const prefixes: string[] = []

  const verify = config.allow.crawlers
  const crawlers =
    verify === false
      ? undefined
      : (deps.crawlers ??
        createCrawlerVerifier(
          verify === true
            ? {}
            : {
                dns: dnsLookups({
                  ...(verify.servers === undefined ? {} : { servers: verify.servers }),
                  timeoutMs: verify.timeoutMs,
                }),
                timeoutMs: verify.timeoutMs,
              },
        ))
  // Only an instance that blocks shares blocks: one that observes neither sends nor enforces them.
  const bus: AnomalyBus | undefined =
    deps.store !== undefined && config.shared && mode === 'block'
      ? createAnomalyBus(deps.store, deps.logger)
      : undefined
  // Campaigns on this instance's routes and networks and those other instances announced:
  // by route template, and by network.
  const underCampaign = new Map<string, LiveCampaign>()
  const underNetwork = new Map<string, LiveCampaign>()
  const live = (
    c: Pick<CampaignInfo, 'id' | 'kind' | 'route'> & { readonly network?: string | undefined },
    until: number,
  ): void => {
    const info: LiveCampaign = {
      id: c.id,
      kind: c.kind,
      scope: c.network === undefined ? 'route' : 'network',
      route: c.route,
      ...(c.network === undefined ? {} : { network: c.network }),
      until,
    }
    if (c.network === undefined) underCampaign.set(c.route, info)
    else underNetwork.set(c.network, info)
  }
  const campaignEvent = (c: Campaign, active: boolean): void =>
    deps.events.emit('anomaly.campaign', {
      id: c.id,
      kind: c.kind,
      scope: c.scope,
      route: c.route,
      ...(c.network === undefined ? {} : { network: c.network }),
      active,
      failures: c.failures,
      clients: c.clients,
      newClients: c.newClients,
      prefixes: c.prefixes.map(([prefix, n]) => [prefix, n] as const),
    })
  /** A detector by route or by network, its campaigns made live, counted, told and shared. */
  const detector = (scope: CampaignScope, settings: Exclude<AnomalyConfig['campaigns'], false>) =>
    createCampaignDetector({
      ...settings,
      ...(scope === 'network' ? { maxRoutes: settings.networks as number } : {}),
      scope,
      onStart(c) {
        const until = c.lastSeen + settings.quietMs
        live(c, until)
        metrics?.campaign(c.kind)
        campaignEvent(c, true)
        bus?.publishCampaign({
          id: c.id,
          route: c.route,
          ...(c.network === undefined ? {} : { network: c.network }),
          kind: c.kind,
          until,
          detail: { failures: c.failures, clients: c.clients },
        })
      },
      onEnd(c) {
        const map = c.network === undefined ? underCampaign : underNetwork
        const at = c.network ?? c.route
        if (map.get(at)?.id === c.id) map.delete(at)
        campaignEvent(c, false)
      },
      onError(err) {
        deps.logger?.error({ err }, 'anomaly: a campaign callback failed')
      },
    })
  const campaigns = config.campaigns === false ? undefined : detector('route', config.campaigns)
  const networks =
    config.campaigns === false || config.campaigns.networks === false
      ? undefined
      : detector('network', config.campaigns)
  bus?.onBlock((b) => {
    const current = blocks.get(b.key)
    if (current !== undefined && current.until >= b.until) return // a repeat, or older news
    blocks.set(b.key, { until: b.until, strikes: b.strikes, reasons: b.reasons })
    deps.events.emit('anomaly.blocked', {
      key: maskKey(b.key),
      score: 1,
      reasons: b.reasons,
      strikes: b.strikes,
      coolDownMs: Math.max(0, b.until - clock()),
      until: b.until,
      shared: true,
    })
  })
  bus?.onUnblock((key) => blocks.delete(key))
  bus?.onCampaign((c) => {
    if (c.network === undefined ? !underCampaign.has(c.route) : !underNetwork.has(c.network)) live(c, c.until)
  })
  if (bus !== undefined) void bus.load()

  let startedAt: number | undefined
  let nextTraining = 0
  const trainer = createTrainer({
    dimensions: DIMENSIONS,
    capacity: config.model.sample,
    trees: config.model.trees,
    subsample: config.model.subsample,
    seed: config.model.seed,
    onModel(m) {
      model = m
      metrics?.trained(m.ms / 1000, m.at)
    },
    onError(err) {
      deps.logger?.error({ err }, 'anomaly: growing the model failed; the previous one stays')
    },
  })

  const warm = (now: number): boolean =>
    model !== undefined && startedAt !== undefined && now - startedAt >= config.warmup.ms

  // ---- identity and the allowlist ----

  const COOKIE_PREFIX =
    config.identity !== 'client' && 'cookie' in config.identity ? `${config.identity.cookie}=` : ''
  const HEADER = config.identity !== 'client' && 'header' in config.identity ? config.identity.header : ''
  /** Who sent the request: the client key, or the configured header's or cookie's value (bounded). */
  function identify(req: IncomingMessage, client: ClientIdentity): string {
    if (config.identity === 'client') return client.key
    let value: string | undefined
    if (HEADER !== '') {
      const h = req.headers[HEADER]
      value = Array.isArray(h) ? h[0] : h
    } else {
      const cookie = req.headers.cookie
      if (cookie !== undefined)
        for (const part of cookie.split(';')) {
          const p = part.trimStart()
          if (p.startsWith(COOKIE_PREFIX)) {
            value = p.slice(COOKIE_PREFIX.length)
            break
          }
        }
    }
    // Namespaced so that a header cannot claim to be an address; bounded so that it cannot fill memory.
    return value === undefined || value === '' ? client.key : `id:${value.slice(0, 256)}`
  }

  /**
   * Never throttled nor blocked: an allowed address, an allowed API key, a crawler DNS
   * confirmed. Read from the request's raw headers (`rawHeaders`).
   */
  function allowed(raw: readonly string[], client: ClientIdentity): boolean {
    if (crawlers !== undefined && typeof crawlerCheck(raw, client) === 'string') return true
    if (allowRanges.length > 0) {
      const addr = parseAddress(client.ip)
      if (addr !== undefined && inRanges(addr, allowRanges)) return true
    }
    if (apiKeys !== undefined) {
      // Sent twice, Node and the app read both values joined: no key of the list, as before.
      const key = firstHeader(raw, apiKeys.header, true)
      if (key !== undefined && apiKeys.keys.has(key)) return true
    }
    return false
  }
  /**
   * The crawler check of a request claiming to be one: its name once DNS confirmed it,
   * `false` for a liar (or no claim), `undefined` while the check runs — a verdict then
   * waits (no new block), but a block in force stands: only a confirmed crawler lifts it.
   */
  function crawlerCheck(raw: readonly string[], client: ClientIdentity): string | false | undefined {
    const ua = firstHeader(raw, 'user-agent')
    return ua === undefined || crawlers === undefined ? false : crawlers.verified(client.ip, ua)
  }

  // ---- verdicts ----

  function blockedAnswer(block: Block, now: number): Rejection {
    const seconds = Math.max(1, Math.ceil((block.until - now) / 1000))
    return problem({
      status: 403,
      code: ErrorCodes.ABNORMAL_USAGE,
      reason: 'anomaly',
      title: 'Abnormal usage detected',
      detail: `Requests from this client look automated or abusive; try again in ${seconds} seconds.`,
      type: IETF_PROBLEM.abnormalUsageDetected,
      headers: { 'retry-after': String(seconds) },
    })
  }

  function block(
    key: string,
    why: readonly string[],
    score: number,
    now: number,
    ms?: number,
    ip?: string,
  ): void {
    const previous = blocks.get(key)
    const strikes =
      previous !== undefined && now - previous.until < STRIKES_FORGOTTEN_MS ? previous.strikes + 1 : 1
    const coolDown = ms ?? Math.min(config.maxCoolDownMs, config.coolDownMs * 2 ** (strikes - 1))
    const until = now + coolDown
    blocks.set(key, { until, strikes, reasons: why })
    bus?.publishBlock({ key, until, reasons: why, strikes })
    metrics?.verdict(labelOf(why), 'block')
    deps.events.emit('anomaly.blocked', {
      key: maskKey(key),
      ...(ip === undefined ? {} : { client: maskAddress(ip) }),
      score,
      reasons: why,
      strikes,
      coolDownMs: coolDown,
      until,
    })
  }

  /** Why a row scored what it did: its rule, or the features that isolated it most. */
  function explainRow(slot: number, now: number): readonly string[] {
    const rule = table.rows[slot * F.FIELDS + F.RULE] as number
    if (rule === CAMPAIGN) return reasons[slot] ?? ['campaign']
    if (rule > 0) return [`rule:${RULES[rule - 1] as string}`]
    if (model === undefined) return []
    model.forest.explain(table.features(slot, now, scratch), shares)
    const out: string[] = []
    const picked = new Set<number>()
    for (let k = 0; k < TOP_FEATURES; k++) {
      let best = -1
      for (let f = 0; f < DIMENSIONS; f++)
        if (!picked.has(f) && (best < 0 || (shares[f] as number) > (shares[best] as number))) best = f
      if (best < 0 || (shares[best] as number) === 0) break
      picked.add(best)
      const dir = (scratch[best] as number) >= (model.medians[best] as number) ? 'high' : 'low'
      out.push(`model:${FEATURES[best] as string}:${dir}`)
    }
    return out
  }

  /** Decide on a row whose score just changed. */
  function judge(
    raw: readonly string[],
    client: ClientIdentity,
    key: string,
    slot: number,
    now: number,
  ): void {
    const r = table.rows
    const o = slot * F.FIELDS
    const score = r[o + F.SCORE] as number
    if (score < threshold) {
      r[o + F.HOT] = 0
      r[o + F.FLAGGED] = 0
      return
    }
    r[o + F.HOT] = (r[o + F.HOT] as number) + 1
    const rule = (r[o + F.RULE] as number) > 0
    // A client a rule keeps catching (a flood, request after request) keeps its reasons: no new ones per request.
    let why = reasons[slot]
    if (why === undefined || r[o + F.FLAGGED] === 0 || !rule || r[o + F.RULE] !== r[o + F.WHY_RULE]) {
      why = explainRow(slot, now)
      reasons[slot] = why
      r[o + F.WHY_RULE] = r[o + F.RULE] as number
    }
    if (r[o + F.FLAGGED] === 0) {
      r[o + F.FLAGGED] = 1
      metrics?.verdict(labelOf(why), 'flag')
      deps.events.emit('anomaly.flagged', {
        key: maskKey(key),
        client: maskAddress(client.ip),
        score,
        reasons: why,
      })
    }
    if (mode !== 'block' || allowed(raw, client)) return
    // A claimed crawler whose check runs gets a few verdicts' grace, no more (checks can be kept busy).
    if ((r[o + F.HOT] as number) <= CRAWLER_GRACE && crawlerCheck(raw, client) === undefined) return
    if (!rule && (r[o + F.HOT] as number) < MODEL_STRIKES) return
    const current = blocks.get(key)
    if (current !== undefined && current.until > now) return
    block(key, why, score, now, undefined, client.ip)
  }

  // ---- campaigns ----

  const challenge = config.challenge
  /** The campaign live at `at` in `map`, forgetting it once over. */
  function liveAt(map: Map<string, LiveCampaign>, at: string): LiveCampaign | undefined {
    const c = map.get(at)
    if (c === undefined || c.until > clock()) return c
    map.delete(at)
    return undefined
  }
  /**
   * The campaign live on the route a request's path belongs to: the route itself when it is
   * literal, else the first templated route (`/users/:id`, `/files/*`) that matches.
   */
  function routeCampaignOf(path: string): LiveCampaign | undefined {
    const exact = liveAt(underCampaign, path)
    if (exact !== undefined) return exact
    for (const route of underCampaign.keys())
      if (isTemplate(route) && matchesTemplate(route, path)) return liveAt(underCampaign, route)
    return undefined
  }
  /** The request's network: its client's, remembered since its first request, or worked out. */
  function networkOf(req: IncomingMessage, client: ClientIdentity): string {
    const slot = table.peek(identify(req, client))
    return (slot === undefined ? undefined : prefixes[slot]) ?? prefixOf(client.ip)
  }
  /**
   * The challenge hook's answer to a request on a route under a campaign (its path matched
   * against the route's template), or from a network under one.
   */
  function challenged(req: IncomingMessage, client: ClientIdentity): Rejection | undefined {
    const c =
      (underCampaign.size > 0 ? routeCampaignOf(pathOf(req.url ?? '/')) : undefined) ??
      (underNetwork.size > 0 ? liveAt(underNetwork, networkOf(req, client)) : undefined)
    if (c === undefined) return undefined
    let answer: unknown
    try {
      answer = (challenge as NonNullable<typeof challenge>)(req, c)
    } catch (err) {
      return deps.failure(err)
    }
    if (answer === undefined || answer === null) return undefined
    // Checked as onReject's answer is: a refusal (4xx or 5xx) that can be written, or nothing.
    const problem =
      typeof answer === 'object' && 'then' in answer
        ? 'a promise: the hook must answer synchronously'
        : (rejectionProblem(answer) ??
          ((answer as Rejection).status < 400 ? 'a status under 400 is no refusal' : undefined))
    if (problem === undefined) return answer as Rejection
    deps.warn(
      WarningCodes.INVALID_REJECTION,
      `anomaly.challenge returned a rejection that cannot be written (${problem}); the request is let through.`,
    )
    return undefined
  }

  /**
   * Observed requests wait for the end of the event loop's turn and are taken in one batch:
   * a request's update touches a client's row, two detectors' buckets and a few kilobytes of
   * code, which another request's work has pushed out of the caches by the time the next one
   * comes; in a batch they are read once for many (docs/performance.md, the anomaly engine).
   * The rules act on what the batch saw before the next turn's requests are admitted.
   *
   * A batch keeps what the update reads, never the request: a finished request kept alive
   * keeps its state (the pipeline's WeakMap), its response and the framework's context with
   * it, and each young-generation collection meanwhile copies them all (measured: twice the
   * collector's time a request on Koa). The records are reused from batch to batch.
   */
  const pending = { count: 0, records: [] as Observation[], now: 0 }
  /** The other batch's records, between flushes: an `observe` during a flush fills these. */
  let spare: Observation[] | undefined = []
  function flush(): void {
    const { count: n, records, now } = pending
    pending.count = 0
    pending.records = spare ?? []
    spare = undefined
    for (let i = 0; i < n; i++) {
      const record = records[i] as Observation
      try {
        if (!closed) observeNow(record, now)
      } catch (err) {
        // Off the request's own call stack now: nothing may escape to the event loop.
        deps.failure(err)
      }
      // Nothing of a request outlives its batch.
      record.key = record.url = record.route = ''
      record.client = NO_CLIENT
      record.rawHeaders = NO_HEADERS
    }
    spare = records
  }
  function observeNow(record: Observation, now: number): void {
    startedAt ??= now
    const { key, client, status, rawHeaders } = record
    const slot = table.touch(key)
    const isNew = table.isNew
    if (isNew) {
      reasons[slot] = undefined
      if (campaigns !== undefined) prefixes[slot] = prefixOf(client.ip)
    }
    seen.now = now
    seen.path = pathOf(record.url)
    seen.route = record.route
    seen.status = status
    seen.method = record.method
    seen.rawHeaders = rawHeaders
    table.update(slot, seen)
    seen.rawHeaders = NO_HEADERS
    const r = table.rows
    const o = slot * F.FIELDS

    let fired = checkRules(table, slot, rules)
    if (campaigns !== undefined) {
      const failed = status === 401 || status === 403
      const prefix = prefixes[slot] ?? ''
      const hash = r[o + F.KEY_HASH] as number
      const c = campaigns.record(seen.route, key, prefix, failed, isNew, now, hash)
      const n = networks?.record(prefix, key, prefix, failed, isNew, now, hash)
      // The route (or the network) tightens for the clients taking part: a stuffing participant
      // is caught at its third failure in a row on a route (a person who mistypes once or twice,
      // then gets in, never is), a flood's at once; an address many browsers share (a NAT) is not
      // one participant. A rotating network's clients are challenged, not caught: each of them
      // was seen once, and the evidence is about the network.
      if (fired === 0 && (c !== undefined || n !== undefined) && people(table, slot) === 1) {
        const caught =
          catches(c, campaigns, seen.route, key, r[o + F.FAIL_STREAK] as number) ??
          catches(n, networks, prefix, key, r[o + F.FAIL_STREAK] as number)
        if (caught !== undefined) {
          // Written once a campaign catches the client, not on each of its requests.
          if (r[o + F.RULE] !== CAMPAIGN) reasons[slot] = [`campaign:${caught.kind}`]
          fired = CAMPAIGN
        }
      }
    }
    if (fired > 0) {
      r[o + F.RULE] = fired
      r[o + F.SCORE] = 1
      r[o + F.UNSCORED] = 0
      judge(rawHeaders, client, key, slot, now)
    } else if (
      (r[o + F.REQUESTS] as number) >= MIN_REQUESTS &&
      ((r[o + F.UNSCORED] as number) >= SCORE_EVERY || now - (r[o + F.SCORED_AT] as number) >= SCORE_MS)
    ) {
      r[o + F.UNSCORED] = 0
      r[o + F.SCORED_AT] = now
      r[o + F.RULE] = 0
      const features = table.features(slot, now, scratch)
      if (warm(now)) {
        const score = (model as Model).forest.score(features)
        r[o + F.SCORE] = score
        metrics?.scored(score)
        judge(rawHeaders, client, key, slot, now)
      } else r[o + F.SCORE] = 0
      // Snapshots of clients not flagged: what the next model learns normal from.
      if (r[o + F.FLAGGED] === 0 && now - (r[o + F.SNAPSHOT_AT] as number) >= SNAPSHOT_MS) {
        r[o + F.SNAPSHOT_AT] = now
        trainer.offer(features)
      }
    }
    if (now >= nextTraining && trainer.size >= config.warmup.snapshots && trainer.train(now))
      nextTraining = now + config.model.everyMs
  }

  // ---- the stages ----

  const offLog = deps.logger === undefined ? undefined : logAnomalyEvents(deps.events, deps.logger)
  let closed = false
  const engine: Engine & { api: AnomalyApi } = {
    name: 'anomaly',
    admit(req, state) {
      if (underCampaign.size + underNetwork.size > 0 && challenge !== undefined) {
        const answer = challenged(req, state.client)
        if (answer !== undefined) return answer
      }
      if (blocks.size === 0 && mode !== 'throttle' && !config.header) return undefined
      const key = identify(req, state.client)
      if (blocks.size > 0) {
        const b = blocks.get(key)
        // Observe mode answers nothing differently: only an operator's own block is enforced there.
        if (b !== undefined && (mode === 'block' || b.reasons[0] === 'operator')) {
          const now = clock()
          if (b.until > now && !allowed(req.rawHeaders, state.client)) return blockedAnswer(b, now)
        }
      }
      const slot = table.peek(key)
      if (slot === undefined) return undefined
      const score = table.rows[slot * F.FIELDS + F.SCORE] as number
      if (mode === 'throttle' && score > threshold && !allowed(req.rawHeaders, state.client))
        (req as Weighted)[WEIGHT] = 1 + ((config.maxCost - 1) * (score - threshold)) / (1 - threshold)
      if (!config.header) return undefined
      const why = reasons[slot]
      const value = `score=${score.toFixed(3)}; threshold=${threshold}${why !== undefined && why.length > 0 && score >= threshold ? `; reasons="${why.join(' ')}"` : ''}`
      return { headers: [['x-aegis-anomaly', value]] }
    },
    observe(req, state, outcome) {
      if (state.skipped || closed) return
      const rejection = state.rejection
      // Our own block says nothing new of the client; other rejections (a 429, a 413) do.
      if (rejection !== undefined && rejection.reason === 'anomaly') return
      // Kept for the batch (below), with the status and the time as they are now. What may throw
      // comes first: a record is counted only once it is whole, and a batch once it is due.
      const key = identify(req, state.client)
      const i = pending.count
      // One clock read a batch: its requests finished within the same turn of the event loop.
      if (i === 0) pending.now = clock()
      const record = (pending.records[i] ??= { ...EMPTY_OBSERVATION })
      record.key = key
      record.client = state.client
      record.url = req.url ?? '/'
      record.method = req.method
      record.rawHeaders = req.rawHeaders
      record.route = (state as AdmittedState).route ?? ''
      record.status = outcome.status
      pending.count = i + 1
      if (i === 0) setImmediate(flush)
      else if (i === MAX_BATCH - 1) flush() // a caller that never yields: bounded all the same
    },
    close() {
      flush()
      closed = true
      offLog?.()
      trainer.close()
      crawlers?.close()
      metrics?.close()
      return bus?.close()
    },
    api: {
      top(n = 10) {
        if (!Number.isInteger(n) || n < 1)
          throw new AegisArgumentError('anomaly.top(n): n must be a positive integer')
        const scored: [string, number, number][] = []
        for (const [key, slot] of table.entries()) {
          const score = table.rows[slot * F.FIELDS + F.SCORE] as number
          if (score > 0) scored.push([key, slot, score])
        }
        scored.sort((a, b) => b[2] - a[2])
        const now = clock()
        return scored.slice(0, n).map(([key, slot]) => describe(key, slot, now))
      },
      explain(key) {
        const slot = table.peek(key)
        return slot === undefined ? undefined : describe(key, slot, clock())
      },
      block(key, ms) {
        if (typeof key !== 'string' || key === '')
          throw new AegisArgumentError('anomaly.block(key): a key is needed')
        if (ms !== undefined && (!Number.isFinite(ms) || ms < 1))
          throw new AegisArgumentError('anomaly.block(key, ms): ms must be a positive number')
        block(key, ['operator'], 1, clock(), ms)
      },
      unblock(key) {
        bus?.publishUnblock(key)
        return blocks.delete(key)
      },
      stats() {
        const now = clock()
        return {
          mode,
          clients: table.size,
          blocked: blockedNow(now),
          snapshots: trainer.size,
          model: model === undefined ? undefined : { at: model.at, rows: model.rows, ms: model.ms },
          warm: warm(now),
        }
      },
    },
  }

  function describe(key: string, slot: number, now: number): AnomalyClient {
    const r = table.rows
    const o = slot * F.FIELDS
    const values = table.features(slot, now, new Float64Array(DIMENSIONS))
    const b = blocks.get(key)
    const score = r[o + F.SCORE] as number
    return {
      key,
      score,
      reasons: score >= threshold ? (reasons[slot] ?? explainRow(slot, now)) : explainRow(slot, now),
      requests: r[o + F.REQUESTS] as number,
      firstSeen: r[o + F.FIRST] as number,
      lastSeen: r[o + F.LAST] as number,
      flagged: r[o + F.FLAGGED] === 1,
      blockedUntil: b !== undefined && b.until > now ? b.until : undefined,
      features: Object.fromEntries(
        FEATURES.map((name, i) => [name, values[i] as number]),
      ) as AnomalyClient['features'],
    }
  }

  return engine
}

/** Whether a route has parameters (`:id`, `{id}`) or a wildcard (`*`). */
const isTemplate = (route: string): boolean => /[:*{]/.test(route)

/**
 * Whether `path` lies on the route `template`: segment by segment, a parameter (`:id`,
 * `:id(\\d+)`, `{id}`) takes any one non-empty segment, a `*` segment the rest of the path.
 *
 * @example
 * matchesTemplate('/users/:id/orders', '/users/42/orders') // true
 * matchesTemplate('/files/*', '/files/a/b.txt') // true
 */
export function matchesTemplate(template: string, path: string): boolean {
  const t = template.split('/')
  const p = path.split('/')
  for (let i = 0; i < t.length; i++) {
    const seg = t[i] as string
    if (seg === '*') return i < p.length
    const got = p[i]
    if (got === undefined) return false
    if (seg.startsWith(':') || (seg.startsWith('{') && seg.endsWith('}'))) {
      if (got === '') return false
    } else if (seg !== got) return false
  }
  return t.length === p.length
}

/** The most requests a batch holds: a turn of a busy server's, many times over. */
const MAX_BATCH = 1024
/** What a batch keeps of one finished request (see `pending` in the engine). */
interface Observation {
  key: string
  client: ClientIdentity
  url: string
  method: string | undefined
  rawHeaders: readonly string[]
  route: string
  status: number
}
const NO_HEADERS: readonly string[] = Object.freeze([])
const NO_CLIENT = Object.freeze({ ip: '', key: '' }) as ClientIdentity
const EMPTY_OBSERVATION: Observation = {
  key: '',
  client: NO_CLIENT,
  url: '',
  method: undefined,
  rawHeaders: NO_HEADERS,
  route: '',
  status: 0,
}

/** `c` if the client takes part in it and has done enough to be caught (see `observe`). */
function catches(
  c: Campaign | undefined,
  detector: CampaignDetector | undefined,
  at: string,
  key: string,
  failStreak: number,
): Campaign | undefined {
  if (c === undefined || detector === undefined) return undefined
  if (c.kind === 'address-rotation' || (c.kind === 'credential-stuffing' && failStreak < CAMPAIGN_FAILURES))
    return undefined
  return detector.participant(at, key) === undefined ? undefined : c
}

/** The limiter's weight for a request in throttle mode: 1 unless the anomaly engine set more. */
export const weightOf = (req: IncomingMessage): number => (req as Weighted)[WEIGHT] ?? 1

/** A verdict's reason as a metric label: the rule's name, `model`, `campaign` or `operator` (a fixed set). */
function labelOf(why: readonly string[]): string {
  const first = why[0]
  if (first === undefined) return 'model'
  const [kind, name] = first.split(':')
  return kind === 'rule' ? (name ?? 'rule') : (kind ?? 'model')
}

/** A key for events and logs: an address masked as client addresses are, an identity's value cut short. */
function maskKey(key: string): string {
  if (key.startsWith('id:')) return `id:${key.slice(3, 7)}…`
  const slash = key.indexOf('/')
  return maskAddress(slash > 0 ? key.slice(0, slash) : key)
}
