import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, inject, it } from 'vitest'
import type { AegisOptions } from '@aegis/core'
import { seeded } from '../../packages/core/src/anomaly/forest.js'
import { startDns } from '../helpers/dns-server.js'
import { send, sendMany, type Answer } from '../helpers/send.js'
import { adapters, type TestApp } from './apps.js'

const ABNORMAL = 'https://iana.org/assignments/http-problem-types#abnormal-usage-detected'

describe.each(adapters)('%s: anomaly engine', (_name, make) => {
  let app: TestApp | undefined
  const start = async (options: AegisOptions) => (app = await make(options))
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('observe (the default) scores a scanner and reports it once, and never blocks', async () => {
    const a = await start({})
    const flagged: unknown[] = []
    a.core.events.on('anomaly.flagged', (e) => flagged.push(e))
    const answers = await sendMany(12, (i) => `${a.url}/wp-admin/probe-${i}.php`)
    expect(answers.every((r) => r.status === 404)).toBe(true)
    expect((await send(`${a.url}/`)).status).toBe(200)
    const seen = a.core.anomaly?.explain('127.0.0.1')
    expect(seen?.score).toBe(1)
    expect(seen?.reasons).toEqual(['rule:scanner'])
    expect(seen?.flagged).toBe(true)
    expect(seen?.blockedUntil).toBeUndefined()
    expect(flagged).toHaveLength(1)
    expect(flagged[0]).toMatchObject({ client: '127.0.0.0/24', score: 1, reasons: ['rule:scanner'] })
    expect(a.core.anomaly?.top(5)[0]?.key).toBe('127.0.0.1')
    const metrics = await send(`${a.url}/metrics`)
    expect(metrics.body).toMatch(/aegis_anomaly_verdicts_total\{reason="scanner",action="flag"\} 1/)
  })

  it('block answers a scanner 403 problem+json with Retry-After, on every path, until unblocked', async () => {
    const a = await start({ anomaly: { mode: 'block' } })
    const blocked: { strikes: number; coolDownMs: number }[] = []
    a.core.events.on('anomaly.blocked', (e) => blocked.push(e))
    const answers = await sendMany(20, (i) => `${a.url}/.env.${i}`)
    const first = answers.findIndex((r) => r.status === 403)
    expect(first).toBeGreaterThanOrEqual(8) // the 8th 404 fires the rule; the next request is refused
    expect(first).toBeLessThanOrEqual(10)
    const refusal = answers[first] as Answer
    expect(refusal.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(JSON.parse(refusal.body)).toMatchObject({
      type: ABNORMAL,
      status: 403,
      code: 'AEGIS_ERR_ABNORMAL_USAGE',
    })
    expect(Number(refusal.headers['retry-after'])).toBeGreaterThan(50)
    expect((await send(`${a.url}/`)).status).toBe(403)
    expect(blocked).toEqual([
      expect.objectContaining({ strikes: 1, coolDownMs: 60_000, reasons: ['rule:scanner'] }),
    ])
    expect(a.core.anomaly?.stats().blocked).toBe(1)
    expect(a.core.anomaly?.unblock('127.0.0.1')).toBe(true)
    expect((await send(`${a.url}/`)).status).toBe(200)
  })

  it('block stops a brute force on one route at the fifth failure', async () => {
    const a = await start({ anomaly: { mode: 'block' } })
    const answers = await sendMany(8, () => `${a.url}/login/fail`, { method: 'POST' })
    expect(answers.map((r) => r.status)).toEqual([401, 401, 401, 401, 401, 403, 403, 403])
    expect(a.core.anomaly?.explain('127.0.0.1')?.reasons).toEqual(['rule:bruteForce'])
  })

  it('an allowlisted address is scored but never blocked', async () => {
    const a = await start({ anomaly: { mode: 'block', allow: { addresses: ['127.0.0.0/8'] } } })
    const answers = await sendMany(20, (i) => `${a.url}/probe-${i}`)
    expect(answers.every((r) => r.status === 404)).toBe(true)
    expect(a.core.anomaly?.explain('127.0.0.1')?.score).toBe(1)
    expect(a.core.anomaly?.stats().blocked).toBe(0)
  })

  it('an allowlisted API key passes a block', async () => {
    const a = await start({
      anomaly: { mode: 'block', allow: { apiKeys: { header: 'x-api-key', keys: ['partner-1'] } } },
    })
    await sendMany(12, (i) => `${a.url}/probe-${i}`)
    expect((await send(`${a.url}/`)).status).toBe(403)
    expect((await send(`${a.url}/`, { headers: { 'x-api-key': 'partner-1' } })).status).toBe(200)
    expect((await send(`${a.url}/`, { headers: { 'x-api-key': 'partner-2' } })).status).toBe(403)
  })

  it('header: X-Aegis-Anomaly carries the score, the threshold and the reasons', async () => {
    const a = await start({ anomaly: { header: true } })
    expect((await send(`${a.url}/`)).headers['x-aegis-anomaly']).toBeUndefined() // not known yet
    expect((await send(`${a.url}/`)).headers['x-aegis-anomaly']).toBe('score=0.000; threshold=0.7')
    await sendMany(10, (i) => `${a.url}/probe-${i}`)
    expect((await send(`${a.url}/`)).headers['x-aegis-anomaly']).toBe(
      'score=1.000; threshold=0.7; reasons="rule:scanner"',
    )
  })

  it('throttle: the limiter charges an anomalous client more', async () => {
    const a = await start({
      anomaly: { mode: 'throttle', maxCost: 10 },
      limiter: { points: 200, duration: 60 },
    })
    await sendMany(10, (i) => `${a.url}/probe-${i}`)
    const before = Number(/r=(\d+)/.exec((await send(`${a.url}/`)).headers.ratelimit ?? '')?.[1])
    const after = Number(/r=(\d+)/.exec((await send(`${a.url}/`)).headers.ratelimit ?? '')?.[1])
    expect(before - after).toBe(10) // a score of 1 costs maxCost
  })

  it('grows a model on its clients in the background, scores with it after the warm-up, and close() stops it', async () => {
    let now = 1_000_000
    const a = await start({
      trustProxy: 'loopback',
      limiter: false,
      anomaly: { clock: () => now, warmup: { ms: 60_000, snapshots: 32 }, model: { everyMs: 10_000 } },
    })
    const random = seeded(7)
    const browse = (c: number) => ({
      'x-forwarded-for': `10.0.${c}.1`,
      'user-agent': `Mozilla/5.0 Browser/${c % 7}`,
      'accept-language': 'en',
    })
    // 40 people reading pages for four minutes of virtual time, each at their own pace.
    const next = Array.from({ length: 40 }, () => random() * 20_000)
    for (;;) {
      const c = next.indexOf(Math.min(...next))
      const t = next[c] as number
      if (t > 240_000) break
      now = 1_000_000 + t
      await send(`${a.url}/users/${Math.floor(random() * 50)}`, { headers: browse(c) })
      next[c] = t + 5000 + random() * 25_000
    }
    // One odd client: a tool, twice a second, every page once, no language.
    for (let i = 0; i < 40; i++) {
      now += 500
      await send(`${a.url}/users/${i}`, {
        headers: { 'x-forwarded-for': '10.9.9.9', 'user-agent': 'curl/8.5' },
      })
    }
    for (let i = 0; i < 100 && a.core.anomaly?.stats().model === undefined; i++)
      await new Promise((r) => setTimeout(r, 10))
    const stats = a.core.anomaly?.stats()
    expect(stats?.model?.rows).toBeGreaterThanOrEqual(32)
    expect(stats?.warm).toBe(true)
    const people = Array.from({ length: 40 }, (_, c) => a.core.anomaly?.explain(`10.0.${c}.1`)?.score ?? 1)
    people.sort((x, y) => x - y)
    expect(people[20]).toBeLessThan(0.6)
    const odd = a.core.anomaly?.explain('10.9.9.9')
    expect(odd?.score).toBeGreaterThan(people[39] as number)
    expect(odd?.reasons.some((r) => r.startsWith('model:'))).toBe(true)
    await a.close()
    app = undefined
    await new Promise((r) => setTimeout(r, 20))
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Immediate')).toEqual([])
  })
})

describe.each(adapters)('%s: anomaly campaigns, shared blocks and verified crawlers', (_name, make) => {
  const apps: TestApp[] = []
  const start = async (options: AegisOptions) => {
    const a = await make(options)
    apps.push(a)
    return a
  }
  afterEach(async () => {
    await Promise.all(apps.splice(0).map(async (a) => a.close()))
  })

  it('detects stuffing spread over 80 addresses as a campaign, and sends the route through the challenge hook', async () => {
    let now = 1_000_000
    const campaigns: { route: string; kind: string; active: boolean; clients: number }[] = []
    const a = await start({
      trustProxy: 'loopback',
      anomaly: {
        clock: () => now,
        challenge: (req, campaign) =>
          req.headers['x-solved'] === 'yes'
            ? undefined
            : req.headers['x-garbage'] === 'yes'
              ? ({ status: 200, body: 'served!' } as never)
              : {
                  status: 401,
                  reason: 'challenge',
                  headers: { 'content-type': 'application/json' },
                  body: JSON.stringify({ challenge: campaign.kind }),
                },
      },
    })
    a.core.events.on('anomaly.campaign', (e) => campaigns.push(e))
    // One failed login from each of 80 addresses in 80 /24s, a quarter of a second apart.
    for (let i = 0; i < 80; i++) {
      now += 250
      const r = await send(`${a.url}/login/fail`, {
        method: 'POST',
        headers: { 'x-forwarded-for': `198.${18 + (i >> 6)}.${i & 63}.7` },
      })
      expect(r.status).toBe(401)
    }
    // The bucket closes at the next request after its end.
    now += 10_000
    await send(`${a.url}/login/fail`, { method: 'POST', headers: { 'x-forwarded-for': '198.51.100.1' } })
    expect(campaigns).toEqual([
      expect.objectContaining({ route: '/login/fail', kind: 'credential-stuffing', active: true }),
    ])
    expect(campaigns[0]?.clients).toBeGreaterThanOrEqual(40)
    const challenged = await send(`${a.url}/login/fail`, {
      method: 'POST',
      headers: { 'x-forwarded-for': '203.0.113.9' },
    })
    expect(challenged.status).toBe(401)
    expect(JSON.parse(challenged.body)).toEqual({ challenge: 'credential-stuffing' })
    const solved = await send(`${a.url}/login/fail`, {
      method: 'POST',
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-solved': 'yes' },
    })
    expect(solved.body).not.toContain('challenge')
    // A hook answering what is no refusal is not obeyed: the request goes on (and one warning says why).
    const garbage = await send(`${a.url}/login/fail`, {
      method: 'POST',
      headers: { 'x-forwarded-for': '203.0.113.10', 'x-garbage': 'yes' },
    })
    expect(garbage.status).toBe(401)
    expect(garbage.body).not.toContain('served!')
    expect((await send(`${a.url}/`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status).toBe(200)
  })

  it('detects a /48 rotating its addresses as a network campaign, and sends its requests through the challenge hook', async () => {
    let now = 1_000_000
    const campaigns: { scope: string; route: string; network?: string; kind: string; active: boolean }[] = []
    const a = await start({
      trustProxy: 'loopback',
      anomaly: {
        clock: () => now,
        campaigns: { settleMs: 0 },
        challenge: (_req, campaign) => ({
          status: 401,
          reason: 'challenge',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ kind: campaign.kind, scope: campaign.scope, network: campaign.network }),
        }),
      },
    })
    a.core.events.on('anomaly.campaign', (e) => campaigns.push(e))
    const from = (i: number) => ({ 'x-forwarded-for': `2001:db8:bad:${(0x100 + i).toString(16)}::1` })
    // One request from each of 40 new addresses of the /48, a quarter of a second apart.
    for (let i = 0; i < 40; i++) {
      expect((await send(`${a.url}/`, { headers: from(i) })).status).toBe(200)
      now += 250
    }
    expect(campaigns).toEqual([])
    // The network's bucket closes at its next request after the bucket's end.
    now += 10_000
    expect((await send(`${a.url}/`, { headers: from(40) })).status).toBe(200)
    expect(campaigns).toEqual([
      expect.objectContaining({
        scope: 'network',
        route: '*',
        network: '2001:db8:bad::/48',
        kind: 'address-rotation',
        active: true,
      }),
    ])
    // Every request from the network is challenged now, a new address's and an old one's alike.
    for (const i of [41, 0]) {
      const challenged = await send(`${a.url}/`, { headers: from(i) })
      expect(challenged.status).toBe(401)
      expect(JSON.parse(challenged.body)).toEqual({
        kind: 'address-rotation',
        scope: 'network',
        network: '2001:db8:bad::/48',
      })
    }
    // Other networks are not.
    expect((await send(`${a.url}/`, { headers: { 'x-forwarded-for': '2001:db8:cafe::1' } })).status).toBe(200)
    expect((await send(`${a.url}/`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status).toBe(200)
  })

  it('a block made by one instance is enforced by another on the same Redis, and lifted there by unblock', async () => {
    const store = { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` }
    const a = await start({ store, anomaly: { mode: 'block' } })
    const b = await start({ store, anomaly: { mode: 'block' } })
    for (const app of [a, b])
      for (let i = 0; i < 250 && app.core.store !== undefined && !app.core.store.up; i++)
        await new Promise((r) => setTimeout(r, 20))
    const shared: unknown[] = []
    b.core.events.on('anomaly.blocked', (e) => shared.push(e))
    await sendMany(10, (i) => `${a.url}/probe-${i}`)
    expect((await send(`${a.url}/`)).status).toBe(403)
    let onB = 200
    for (let i = 0; i < 100 && onB !== 403; i++) {
      await new Promise((r) => setTimeout(r, 20))
      onB = (await send(`${b.url}/`)).status
    }
    expect(onB).toBe(403)
    expect(shared).toEqual([expect.objectContaining({ shared: true, reasons: ['rule:scanner'] })])
    a.core.anomaly?.unblock('127.0.0.1')
    let after = 403
    for (let i = 0; i < 100 && after !== 200; i++) {
      await new Promise((r) => setTimeout(r, 20))
      after = (await send(`${b.url}/`)).status
    }
    expect(after).toBe(200)
  })

  it('never blocks a crawler whose address DNS confirms; blocks one whose claim DNS refutes', async () => {
    const dns = await startDns({
      ptr: { '66.249.66.1': ['crawl-66-249-66-1.googlebot.com'], '203.0.113.66': ['host.example.net'] },
      a: { 'crawl-66-249-66-1.googlebot.com': ['66.249.66.1'] },
    })
    try {
      const googlebot = {
        'user-agent': 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
      }
      const options = (mode: 'block') => ({
        trustProxy: 'loopback' as const,
        anomaly: { mode, allow: { crawlers: { servers: [dns.server], timeoutMs: 1000 } } },
      })
      const a = await start(options('block'))
      // The real crawler (its address forwarded: c-ares answers loopback's PTR from /etc/hosts):
      // 30 pages it does not find, at once; never blocked.
      const real = { ...googlebot, 'x-forwarded-for': '66.249.66.1' }
      const answers = await sendMany(30, (i) => `${a.url}/old-page-${i}`, { headers: real })
      expect(answers.map((r) => r.status)).toEqual(answers.map(() => 404))
      expect(a.core.anomaly?.explain('66.249.66.1')?.score).toBe(1)
      // A liar: blocked once DNS has answered.
      const liar = { ...googlebot, 'x-forwarded-for': '203.0.113.66' }
      let status = 404
      for (let i = 0; i < 60 && status !== 403; i++) {
        status = (await send(`${a.url}/probe-${i}`, { headers: liar })).status
        if (status !== 403) await new Promise((r) => setTimeout(r, 10))
      }
      expect(status).toBe(403)
      expect(dns.count('PTR')).toBe(2)
    } finally {
      await dns.close()
    }
  })
})
