/**
 * Types of traffic.mjs, for the TypeScript tests that check the generator
 * (test/bench/anomaly-traffic.test.ts). The bench scripts themselves are plain
 * JavaScript.
 */

/** A profile's name: the benign kinds, then the attacks. */
export type ProfileKind =
  | 'human'
  | 'nat-human'
  | 'api-poller'
  | 'crawler'
  | 'flood'
  | 'flood-rotating-ua'
  | 'scanner'
  | 'scanner-slow'
  | 'scanner-mixed'
  | 'stuffing'
  | 'brute-force'
  | 'stuffing-human-pace'
  | 'enumerator'
  | 'scraper'
  | 'scraper-stealthy'
  | 'stuffing-distributed'

/** One simulated request. */
export interface SimRequest {
  /** Virtual time, in ms from the start of the run. */
  readonly t: number
  readonly client: string
  readonly kind: ProfileKind
  readonly attacker: boolean
  /** The client's address, sent as X-Forwarded-For. */
  readonly ip: string
  readonly method: 'GET' | 'POST'
  /** Path and query. */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string
  /** The attack's own action (a probe, a login try, a flood hit, a scraped page), not its cover traffic. */
  readonly probe?: true
}

/** One simulated client. */
export interface SimClient {
  readonly id: string
  readonly kind: ProfileKind
  readonly attacker: boolean
  readonly evasive: boolean
  readonly ip: string
  /** When it meant to start (virtual ms). */
  readonly start: number
  /** The distributed campaign it belongs to, if any. */
  readonly campaign?: string
}

/** A distributed campaign: many clients, one route. */
export interface SimCampaign {
  readonly id: string
  readonly kind: ProfileKind
  readonly method: string
  readonly route: string
  readonly clients: readonly string[]
  /** Virtual time of its first request. */
  readonly start: number
}

export interface Traffic {
  readonly seed: number
  readonly minutes: number
  readonly scale: number
  readonly durationMs: number
  readonly requests: readonly SimRequest[]
  readonly clients: readonly SimClient[]
  readonly campaigns: readonly SimCampaign[]
}

export interface Profile {
  readonly attacker: boolean
  readonly evasive?: boolean
  readonly family?: string
  readonly about: string
}

export declare const PROFILES: Readonly<Record<ProfileKind, Profile>>
export declare const MIX: Readonly<Record<ProfileKind, number>>
export declare const CAMPAIGN_ADDRESSES: number

/**
 * Generate one run's traffic (see traffic.mjs).
 *
 * @example
 * const { requests } = generateTraffic({ seed: 7, minutes: 5, scale: 0.2 })
 */
export declare function generateTraffic(options?: {
  seed?: number
  minutes?: number
  scale?: number
}): Traffic

/**
 * Requests and clients per profile.
 *
 * @example
 * summarize(generateTraffic()).human.clients // 300
 */
export declare function summarize(
  traffic: Pick<Traffic, 'requests' | 'clients'>,
): Partial<Record<ProfileKind, { clients: number; requests: number }>>
