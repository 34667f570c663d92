/**
 * The anomaly simulator's traffic (bench/anomaly/traffic.mjs) is what the
 * engine is tuned against: these tests hold it to what it claims to be —
 * reproducible from its seed, in time order, and with the shapes each profile
 * is named for (pollers regular, humans bursty, the distributed campaign spread
 * over distinct /24s with at most five tries each, …).
 */
import { createHash } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  CAMPAIGN_ADDRESSES,
  MIX,
  PROFILES,
  generateTraffic,
  type SimRequest,
  type Traffic,
} from '../../bench/anomaly/traffic.mjs'
import { parseAnomalyHeader, percentile } from '../../bench/anomaly/report.mjs'

const fingerprint = (traffic: Traffic): string => {
  const hash = createHash('sha256')
  for (const q of traffic.requests) hash.update(JSON.stringify(q))
  return hash.digest('hex')
}

/** Coefficient of variation of the gaps between successive times. */
const gapCv = (times: readonly number[]): number => {
  const gaps = times.slice(1).map((t, i) => t - times[i]!)
  const mean = gaps.reduce((s, g) => s + g, 0) / gaps.length
  const variance = gaps.reduce((s, g) => s + (g - mean) ** 2, 0) / gaps.length
  return Math.sqrt(variance) / mean
}

const prefix24 = (ip: string): string => ip.split('.').slice(0, 3).join('.')

/** Paths the target app routes; a scanner's probe is none of them. */
const ROUTED = /^\/(?:$|page\/|static\/|api\/items\/|api\/poll$|login$)/

describe('the anomaly simulator', () => {
  let traffic: Traffic
  let byClient: Map<string, SimRequest[]>
  beforeAll(() => {
    traffic = generateTraffic({ seed: 1 })
    byClient = new Map()
    for (const q of traffic.requests) {
      let list = byClient.get(q.client)
      if (list === undefined) byClient.set(q.client, (list = []))
      list.push(q)
    }
  })
  const ofKind = (kind: keyof typeof PROFILES): SimRequest[][] =>
    traffic.clients.filter((c) => c.kind === kind).map((c) => byClient.get(c.id) ?? [])

  it('is the same for the same seed, and another for another seed', () => {
    const a = generateTraffic({ seed: 42, minutes: 6, scale: 0.2 })
    const b = generateTraffic({ seed: 42, minutes: 6, scale: 0.2 })
    const c = generateTraffic({ seed: 43, minutes: 6, scale: 0.2 })
    expect(a.requests.length).toBeGreaterThan(1000)
    expect(fingerprint(a)).toBe(fingerprint(b))
    expect(a.clients).toEqual(b.clients)
    expect(fingerprint(c)).not.toBe(fingerprint(a))
  })

  it('is in time order, within the run, on whole milliseconds, from known clients', () => {
    const clients = new Map(traffic.clients.map((c) => [c.id, c]))
    // Collected, then asserted once: an expect() per request would take seconds over 82,000 of them.
    const wrong: SimRequest[] = []
    let last = 0
    for (const q of traffic.requests) {
      const c = clients.get(q.client)
      const ok =
        q.t >= last &&
        Number.isInteger(q.t) &&
        c !== undefined &&
        c.kind === q.kind &&
        c.ip === q.ip &&
        c.attacker === q.attacker
      if (!ok) wrong.push(q)
      last = q.t
    }
    expect(wrong).toEqual([])
    expect(traffic.requests[0]!.t).toBeGreaterThanOrEqual(0)
    expect(last).toBeLessThan(traffic.durationMs)
    // Every profile is there, in the numbers the mix says (NAT: three addresses, 20–50 humans each).
    for (const kind of Object.keys(PROFILES) as (keyof typeof PROFILES)[]) {
      const n = traffic.clients.filter((c) => c.kind === kind).length
      if (kind === 'nat-human') expect(n).toBeGreaterThanOrEqual(60)
      else if (kind === 'stuffing-distributed') expect(n).toBe(CAMPAIGN_ADDRESSES)
      else expect(n).toBe(MIX[kind])
    }
  })

  it('polls regularly (gap CV < 0.05) while humans browse in bursts (median gap CV > 1.5)', () => {
    const pollerCvs = ofKind('api-poller').map((qs) =>
      gapCv(qs.filter((q) => q.path === '/api/poll').map((q) => q.t)),
    )
    expect(Math.max(...pollerCvs)).toBeLessThan(0.05)
    const humanCvs = ofKind('human')
      .filter((qs) => qs.length >= 20)
      .map((qs) => gapCv(qs.map((q) => q.t)))
    expect(percentile(humanCvs, 50)).toBeGreaterThan(1.5)
    // A page and its assets: most of a human's requests come within a second of the one before.
    const gaps = ofKind('human').flatMap((qs) => qs.slice(1).map((q, i) => q.t - qs[i]!.t))
    expect(gaps.filter((g) => g < 1000).length / gaps.length).toBeGreaterThan(0.7)
  })

  it('puts 20–50 humans, with different user agents, behind each of three NAT addresses', () => {
    const byIp = new Map<string, Set<string>>()
    for (const qs of ofKind('nat-human'))
      for (const q of qs) {
        const uas = byIp.get(q.ip) ?? new Set<string>()
        uas.add(q.headers['user-agent']!)
        byIp.set(q.ip, uas)
      }
    expect(byIp.size).toBe(3)
    for (const uas of byIp.values()) expect(uas.size).toBeGreaterThanOrEqual(10)
  })

  it('crawls politely: distinct pages, at least 1.4 s apart, with a crawler user agent', () => {
    for (const qs of ofKind('crawler')) {
      const pages = qs.filter((q) => q.path.startsWith('/page/') || q.path === '/')
      expect(pages.length).toBeGreaterThan(50)
      for (let i = 1; i < pages.length; i++)
        expect(pages[i]!.t - pages[i - 1]!.t).toBeGreaterThanOrEqual(1400)
      expect(new Set(pages.map((q) => q.path)).size).toBe(pages.length)
      expect(pages[0]!.headers['user-agent']).toMatch(/bot/i)
    }
  })

  it('runs the distributed stuffing over ≥ 200 distinct /24s, ≤ 5 tries each, nobody else in them', () => {
    const [campaign] = traffic.campaigns
    expect(campaign).toBeDefined()
    const members = traffic.clients.filter((c) => c.campaign === campaign!.id)
    const prefixes = new Set(members.map((c) => prefix24(c.ip)))
    expect(prefixes.size).toBeGreaterThanOrEqual(200)
    expect(prefixes.size).toBe(members.length)
    for (const c of members) {
      const tries = byClient.get(c.id) ?? []
      expect(tries.length).toBeGreaterThanOrEqual(1)
      expect(tries.length).toBeLessThanOrEqual(5)
      for (const q of tries) expect([q.method, q.path]).toEqual(['POST', '/login'])
    }
    const others = traffic.clients.filter((c) => c.campaign === undefined && c.ip.includes('.'))
    for (const c of others) expect(prefixes.has(prefix24(c.ip))).toBe(false)
    expect(campaign!.start).toBe(
      Math.min(...members.flatMap((c) => (byClient.get(c.id) ?? []).map((q) => q.t))),
    )
  })

  it('gives each attack its shape', () => {
    for (const qs of ofKind('scanner')) {
      const probes = qs.filter((q) => q.probe === true)
      expect(probes.length).toBeGreaterThanOrEqual(80)
      for (const q of probes) expect(q.path).not.toMatch(ROUTED)
    }
    for (const qs of ofKind('flood')) {
      expect(qs.length).toBeGreaterThanOrEqual(300)
      expect(new Set(qs.map((q) => q.ip)).size).toBe(1)
      expect((qs.length - 1) / ((qs.at(-1)!.t - qs[0]!.t) / 1000)).toBeGreaterThan(20)
    }
    for (const qs of ofKind('flood-rotating-ua'))
      expect(new Set(qs.map((q) => q.headers['user-agent'])).size).toBeGreaterThan(20)
    for (const qs of [...ofKind('stuffing'), ...ofKind('brute-force')]) {
      expect(qs.length).toBeGreaterThanOrEqual(60)
      for (const q of qs) expect([q.method, q.path]).toEqual(['POST', '/login'])
    }
    for (const qs of ofKind('stuffing-human-pace')) {
      const tries = qs.filter((q) => q.probe === true)
      for (let i = 1; i < tries.length; i++)
        expect(tries[i]!.t - tries[i - 1]!.t).toBeGreaterThanOrEqual(8000)
      expect(tries[0]!.headers['accept-language']).toBeDefined()
    }
    for (const qs of ofKind('enumerator'))
      qs.forEach((q, i) =>
        expect(Number(q.path.split('/').at(-1)) - Number(qs[0]!.path.split('/').at(-1))).toBe(i),
      )
    for (const qs of ofKind('scraper')) {
      expect(qs.length).toBeGreaterThanOrEqual(300)
      expect(new Set(qs.map((q) => q.path)).size).toBe(qs.length)
      expect(qs.some((q) => q.path.startsWith('/static/'))).toBe(false)
    }
    for (const qs of ofKind('scraper-stealthy')) {
      expect(qs.some((q) => q.path.startsWith('/static/'))).toBe(true)
      expect(qs[0]!.headers['accept-language']).toBeDefined()
    }
  })

  it('starts some attackers in the first minute and most after the warm-up', () => {
    const attackers = traffic.clients.filter((c) => c.attacker && c.campaign === undefined)
    const firsts = attackers.map((c) => byClient.get(c.id)?.[0]?.t ?? Infinity)
    expect(firsts.filter((t) => t < 60_000).length).toBeGreaterThanOrEqual(5)
    expect(firsts.filter((t) => t >= 0.25 * traffic.durationMs).length / firsts.length).toBeGreaterThan(0.6)
  })
})

describe("the evaluator's reading of the debug header", () => {
  it('takes score, threshold and reasons, and shrugs at anything else', () => {
    expect(parseAnomalyHeader('score=0.82; threshold=0.6; reasons="404-burst, tool-ua"')).toEqual({
      score: 0.82,
      threshold: 0.6,
      reasons: ['404-burst', 'tool-ua'],
    })
    expect(parseAnomalyHeader('score=3')).toEqual({ score: 3, threshold: undefined, reasons: [] })
    expect(parseAnomalyHeader('score=abc; threshold=')).toEqual({
      score: undefined,
      threshold: undefined,
      reasons: [],
    })
    expect(parseAnomalyHeader(undefined)).toBeUndefined()
    expect(parseAnomalyHeader('')).toBeUndefined()
  })
})
