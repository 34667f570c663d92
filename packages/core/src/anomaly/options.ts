/**
 * The anomaly engine's options. On by default in `observe` mode: it scores and reports,
 * and never answers a request differently until the operator chooses `throttle` or
 * `block` (as a WAF is first deployed in detection-only mode).
 */
import { Resolver } from 'node:dns/promises'
import type { IncomingMessage } from 'node:http'
import { z } from 'zod'
import { strictAddress, strictCidr } from '../client/options.js'
import { fn, headerName } from '../kernel/option-helpers.js'
import { campaignSchema } from './campaigns.js'
import type { Rejection } from '../kernel/types.js'

/** A rule's switch: `false` turns it off; numbers tune it (each with its default). */
const rule = <S extends z.ZodRawShape>(shape: S) =>
  z.union([z.literal(false), z.strictObject(shape)]).prefault({} as never)

/** An address or a CIDR range, for the allowlist. */
const addressOrCidr = z
  .string()
  .refine((s) => (s.includes('/') ? strictCidr(s) : strictAddress(s)) !== undefined, {
    message: 'expected an IP address or a CIDR range',
  })

/** A name server as `Resolver#setServers` takes it: an address, with a port if not 53. */
const nameServer = z.string().refine(
  (s) => {
    try {
      new Resolver().setServers([s])
      return true
    } catch {
      return false
    }
  },
  { message: "expected a name server address ('10.0.0.2', '127.0.0.1:5353', '[::1]:53')" },
)

const ruleSettings = z.strictObject({
  /**
   * A flood: more than `requests` requests within about `seconds` (a decayed count; an
   * asset counts a tenth), more than a page load's burst. Scaled up for an address
   * that many browsers share (a NAT).
   */
  flood: rule({
    requests: z.int().min(5).max(1_000_000).default(30),
    seconds: z.number().min(0.1).max(3600).default(5),
  }),
  /** A scanner: `notFound` 404s or more within about a minute, at least `ratio` of its requests. */
  scanner: rule({
    notFound: z.int().min(2).max(100_000).default(8),
    ratio: z.number().min(0).max(1).default(0.5),
  }),
  /** Credential stuffing or brute force: `failures` 401/403 answers in a row on one route. */
  bruteForce: rule({ failures: z.int().min(2).max(100_000).default(5) }),
  /** ID enumeration: `ids` distinct paths on one templated route (`/items/:id`), `ratio` of them 404 or 403. */
  enumeration: rule({
    ids: z.int().min(5).max(100_000).default(30),
    ratio: z.number().min(0).max(1).default(0.3),
  }),
  /** An aggressive scraper: more than `pages` page requests (not assets) within about a minute. */
  scraper: rule({ pages: z.int().min(10).max(1_000_000).default(60) }),
})

const anomalySettings = z.strictObject({
  /**
   * `observe` (the default): score, count, report; never act. `throttle`: the limiter
   * charges a client more points the more anomalous it is. `block`: answer 403
   * (`abnormal-usage-detected`) for a cool-down that doubles on every repeat.
   */
  mode: z.enum(['observe', 'throttle', 'block']).default('observe'),
  /** Score (0–1) from which a client counts as anomalous: flagged, throttled or blocked. */
  threshold: z.number().min(0.5).max(1).default(0.7),
  /**
   * Whom a client is: the client key (the address; the /64 for IPv6), or the value of a
   * request header (`{ header: 'x-api-key' }`) or a cookie (`{ cookie: 'sid' }`) where
   * present (the key otherwise).
   */
  identity: z
    .union([
      z.literal('client'),
      z.strictObject({ header: headerName.transform((h) => h.toLowerCase()) }),
      z.strictObject({
        cookie: z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a cookie name'),
      }),
    ])
    .default('client'),
  /** Add `X-Aegis-Anomaly` (score, threshold and reasons) to answers: for debugging, never in production. */
  header: z.boolean().default(false),
  /** Clients remembered (least recently seen out first); each costs under 1 KB. */
  maxClients: z.int().min(100).max(10_000_000).default(100_000),
  /**
   * The model scores only after `ms` of traffic and `snapshots` client snapshots: a
   * forest grown on a handful of clients calls everyone odd. The rules act from the start.
   */
  warmup: z
    .strictObject({
      ms: z.int().min(0).max(86_400_000).default(60_000),
      snapshots: z.int().min(16).max(1_000_000).default(128),
    })
    .prefault({}),
  /** The Isolation Forest, regrown every `everyMs` on the `sample` most recent client snapshots. */
  model: z
    .strictObject({
      trees: z.int().min(1).max(1000).default(100),
      subsample: z.int().min(16).max(4096).default(256),
      sample: z.int().min(64).max(100_000).default(4096),
      everyMs: z.int().min(1000).max(86_400_000).default(30_000),
      seed: z
        .int()
        .min(0)
        .max(2 ** 32 - 1)
        .default(1),
    })
    .prefault({}),
  rules: ruleSettings.prefault({}),
  /**
   * Per route and per /24 or /48 network, auth failures, request intensity and new clients
   * against their baselines (EWMA, CUSUM): campaigns spread over many addresses, which no
   * per-client score sees.
   */
  campaigns: z.union([z.literal(false), campaignSchema]).prefault({} as never),
  /** A block's first cool-down; each repeat doubles it, up to `maxCoolDownMs`. */
  coolDownMs: z.int().min(1000).max(86_400_000).default(60_000),
  maxCoolDownMs: z
    .int()
    .min(1000)
    .max(30 * 86_400_000)
    .default(3_600_000),
  /** In `throttle` mode, what a request of a client scoring 1 costs the limiter (1 at the threshold). */
  maxCost: z.number().min(1).max(1000).default(10),
  /** Never throttled nor blocked: addresses and ranges, API keys, and crawlers whose address DNS confirms. */
  allow: z
    .strictObject({
      addresses: z.array(addressOrCidr).max(10_000).default([]),
      apiKeys: z
        .strictObject({
          header: headerName.transform((h) => h.toLowerCase()),
          keys: z.array(z.string().min(1).max(1024)).min(1).max(100_000),
        })
        .optional(),
      /**
       * Verify crawlers by DNS: `true` with the system's resolver, or `{ servers, timeoutMs }`
       * to ask given name servers (`'10.0.0.2'`, `'127.0.0.1:5353'`, `'[::1]:53'`).
       */
      crawlers: z
        .union([
          z.boolean(),
          z.strictObject({
            servers: z.array(nameServer).min(1).max(16).optional(),
            timeoutMs: z.int().min(10).max(60_000).default(2000),
          }),
        ])
        .default(true),
    })
    .prefault({}),
  /** With a `store`: blocks and campaigns made by one instance are enforced by all. */
  shared: z.boolean().default(true),
  /**
   * Called for each request to a route under a campaign (all its clients, new ones included),
   * and for each request from a network under one: a rejection to answer instead (a
   * challenge, a proof-of-work demand), or `undefined`.
   */
  challenge: fn<ChallengeHook>('(req, campaign) => rejection | undefined').optional(),
  /** The engine's clock, in ms since the epoch (`Date.now`): a simulator replays traffic on a virtual one. */
  clock: fn<() => number>('() => number').optional(),
})

/** What a `challenge` hook sees of the campaign on the request's route, or on its network. */
export interface CampaignInfo {
  readonly id: string
  readonly kind: string
  readonly scope: 'route' | 'network'
  /** The route template; `*` for a network's campaign. */
  readonly route: string
  /** The /24 or /48 of a network's campaign. */
  readonly network?: string
}
/** A challenge hook: a `Rejection` to answer instead, or `undefined` to let the request on. */
export type ChallengeHook = (req: IncomingMessage, campaign: CampaignInfo) => Rejection | undefined

/**
 * The top-level `anomaly` option: on in `observe` mode unless `false`.
 *
 * @example
 * anomalySection.parse({ mode: 'block' }).threshold // 0.7
 */
export const anomalySection = z
  .union([z.literal(false), anomalySettings])
  .prefault({} as never)
  .refine((a) => a === false || a.maxCoolDownMs >= a.coolDownMs, {
    message: 'maxCoolDownMs must be at least coolDownMs',
    path: ['maxCoolDownMs'],
  })

export type AnomalyOptions = z.input<typeof anomalySettings>
export type AnomalyConfig = z.output<typeof anomalySettings>
