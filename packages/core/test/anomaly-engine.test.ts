import { describe, expect, it } from 'vitest'
import {
  ClientTable,
  DIMENSIONS,
  F,
  FEATURES,
  firstHeader,
  isAsset,
  type Seen,
} from '../src/anomaly/features.js'
import { seeded } from '../src/anomaly/forest.js'
import { matchesTemplate } from '../src/anomaly/engine.js'
import { anomalySection } from '../src/anomaly/options.js'
import { checkRules, people, RULES, ruleSettings } from '../src/anomaly/rules.js'
import { createTrainer, type Model } from '../src/anomaly/trainer.js'

const request = (headers: Record<string, string> = {}, method = 'GET') => {
  const all = { 'Accept-Language': 'en', 'User-Agent': 'Mozilla/5.0 Firefox/128.0', ...headers }
  return { method, rawHeaders: Object.entries(all).flat() }
}

const seen = (now: number, path: string, status = 200, req = request(), route = path): Seen => ({
  now,
  path,
  route,
  status,
  ...req,
})
const rules = ruleSettings(
  (anomalySection.parse({}) as Exclude<ReturnType<typeof anomalySection.parse>, false>).rules,
)
const fired = (table: ClientTable, slot: number): string | undefined => {
  const n = checkRules(table, slot, rules)
  return n === 0 ? undefined : RULES[n - 1]
}

describe('client features', () => {
  it('decays counts with time: ten requests read as about ten, a minute later as almost none at 10 s', () => {
    const table = new ClientTable(10, 5)
    const slot = table.touch('a')
    for (let i = 0; i < 10; i++) table.update(slot, seen(1000 + i * 100, `/p${i}`))
    const out = new Float64Array(DIMENSIONS)
    table.features(slot, 2000, out)
    const rate10s = out[FEATURES.indexOf('rate_10s')] as number
    expect(Math.expm1(rate10s) / 6).toBeGreaterThan(9) // per minute / 6 = per 10 s
    table.features(slot, 62_000, out)
    expect(Math.expm1(out[FEATURES.indexOf('rate_10s')] as number) / 6).toBeLessThan(0.05)
    // The 5-minute count has barely moved (the feature is per minute: count × 60 / 300).
    expect(Math.expm1(out[FEATURES.indexOf('rate_5m')] as number) * 5).toBeGreaterThan(8)
  })

  it('counts distinct paths by linear counting: forty read as thirty to sixty, one route as one', () => {
    const table = new ClientTable(10, 5)
    const slot = table.touch('a')
    for (let i = 0; i < 40; i++)
      table.update(slot, seen(1000 + i, `/items/${i}`, 200, request(), '/items/:id'))
    expect(table.distinctPaths(slot)).toBeGreaterThan(30)
    expect(table.distinctPaths(slot)).toBeLessThan(60)
    expect(table.distinctRoutes(slot)).toBeLessThan(1.5)
  })

  it('reads the rhythm: a poller has a small inter-arrival CV, a person a large one', () => {
    const table = new ClientTable(10, 5)
    const poller = table.touch('poller')
    const person = table.touch('person')
    const random = seeded(3)
    let t = 0
    for (let i = 0; i < 60; i++) table.update(poller, seen((t += 10_000 + random() * 200), '/api/poll'))
    t = 0
    for (let i = 0; i < 60; i++)
      table.update(person, seen((t += random() < 0.7 ? 50 : 30_000 * random()), '/p'))
    const cv = FEATURES.indexOf('interarrival_cv')
    expect(table.features(poller, t, new Float64Array(DIMENSIONS))[cv]).toBeLessThan(0.1)
    expect(table.features(person, t, new Float64Array(DIMENSIONS))[cv]).toBeGreaterThan(1)
  })

  it('tells assets from pages by extension', () => {
    expect(isAsset('/static/app.3f9a.js')).toBe(true)
    expect(isAsset('/img/logo.PNG')).toBe(true)
    expect(isAsset('/users/john.doe')).toBe(false)
    expect(isAsset('/v1.2/items')).toBe(false)
  })

  it('reads a header from the raw pairs in any case, the first of two (none with once), none when absent', () => {
    const raw = ['Host', 'a', 'X-API-Key', 'k1', 'x-api-key', 'k2', 'USER-AGENT', 'curl/8']
    expect(firstHeader(raw, 'x-api-key')).toBe('k1')
    expect(firstHeader(raw, 'user-agent')).toBe('curl/8')
    expect(firstHeader(raw, 'x-api-ke')).toBeUndefined()
    expect(firstHeader([], 'host')).toBeUndefined()
    // `once`: a header sent twice has no value (Node would join them).
    expect(firstHeader(raw, 'x-api-key', true)).toBeUndefined()
    expect(firstHeader(raw, 'user-agent', true)).toBe('curl/8')
  })

  it('holds at most its bound, reusing the rows of clients evicted', () => {
    const table = new ClientTable(100, 5)
    for (let i = 0; i < 1000; i++) table.update(table.touch(`c${i}`), seen(i, '/'))
    expect(table.size).toBe(100)
    expect(table.rows.length).toBe(100 * F.FIELDS)
    expect(table.peek('c0')).toBeUndefined()
    expect(table.peek('c999')).toBeDefined()
  })
})

describe('guard rules', () => {
  it('a page load with forty assets is no flood; forty pages in a second are', () => {
    const table = new ClientTable(10, 5)
    const person = table.touch('person')
    table.update(person, seen(1000, '/'))
    for (let i = 0; i < 40; i++) table.update(person, seen(1000 + i * 20, `/static/a${i}.css`))
    expect(fired(table, person)).toBeUndefined()
    const tool = table.touch('tool')
    for (let i = 0; i < 40; i++) table.update(tool, seen(1000 + i * 25, '/'))
    expect(fired(table, tool)).toBe('flood')
  })

  it('an address of many browsers loading pages is a NAT (thresholds scale); one rotating agents without assets is not', () => {
    const table = new ClientTable(10, 5)
    const nat = table.touch('nat')
    const tool = table.touch('tool')
    for (let i = 0; i < 200; i++) {
      const ua = request({ 'User-Agent': `Mozilla/5.0 Browser/${i % 20}` })
      table.update(nat, seen(i * 50, i % 3 === 0 ? `/page/${i}` : `/static/${i}.js`, 200, ua))
      table.update(tool, seen(i * 50, `/page/${i}`, 200, ua))
    }
    expect(people(table, nat)).toBeGreaterThan(4)
    expect(people(table, tool)).toBe(1)
    expect(fired(table, nat)).toBeUndefined()
    expect(fired(table, tool)).toBe('flood')
  })

  it('scanner at the eighth 404 in a minute; brute force at the fifth failure in a row on one route, reset by a success', () => {
    const table = new ClientTable(10, 5)
    const scanner = table.touch('scanner')
    for (let i = 0; i < 7; i++) table.update(scanner, seen(i * 500, `/wp-${i}.php`, 404))
    expect(fired(table, scanner)).toBeUndefined()
    table.update(scanner, seen(3500, '/wp-8.php', 404))
    expect(fired(table, scanner)).toBe('scanner')

    const guesser = table.touch('guesser')
    const login = (t: number, status: number) =>
      table.update(guesser, seen(t, '/login', status, request({}, 'POST')))
    for (let i = 0; i < 4; i++) login(i * 3000, 401)
    login(13_000, 200) // got in: the streak is over
    for (let i = 0; i < 4; i++) login(20_000 + i * 3000, 401)
    expect(fired(table, guesser)).toBeUndefined()
    login(40_000, 401)
    expect(fired(table, guesser)).toBe('bruteForce')
  })

  it('enumeration: thirty IDs walked on one templated route, a third of them missing (too few for a scanner)', () => {
    const table = new ClientTable(10, 5)
    const walker = table.touch('walker')
    for (let i = 0; i < 30; i++)
      table.update(
        walker,
        seen(i * 3000, `/api/items/${i}`, i % 3 === 0 ? 404 : 200, request(), '/api/items/:id'),
      )
    expect(fired(table, walker)).toBe('enumeration')
  })
})

describe('the trainer', () => {
  it('grows a model in chunks off the request path, with the medians of what it learned from', async () => {
    const model = await new Promise<Model>((resolve, reject) => {
      const trainer = createTrainer({
        dimensions: 2,
        capacity: 512,
        trees: 100,
        subsample: 256,
        seed: 1,
        onModel: resolve,
        onError: reject,
      })
      const random = seeded(9)
      for (let i = 0; i < 512; i++) trainer.offer(new Float64Array([random(), 10 + random()]))
      expect(trainer.train(5)).toBe(true)
      expect(trainer.train(5)).toBe(false) // one at a time
    })
    expect(model.rows).toBe(512)
    expect(model.at).toBe(5)
    expect(model.medians[0]).toBeCloseTo(0.5, 1)
    expect(model.medians[1]).toBeCloseTo(10.5, 1)
    expect(model.forest.score([5, 50])).toBeGreaterThan(0.6)
    expect(model.forest.score([0.5, 10.5])).toBeLessThan(0.5)
  })

  it('close() while growing: no model, no callback, nothing left scheduled', async () => {
    let models = 0
    const trainer = createTrainer({
      dimensions: 2,
      capacity: 4096,
      trees: 1000,
      subsample: 4096,
      seed: 1,
      onModel: () => models++,
      onError: () => models++,
    })
    const random = seeded(1)
    for (let i = 0; i < 4096; i++) trainer.offer(new Float64Array([random(), random()]))
    trainer.train(0)
    await new Promise((r) => setImmediate(r))
    expect(trainer.training).toBe(true)
    trainer.close()
    expect(trainer.training).toBe(false)
    await new Promise((r) => setTimeout(r, 50))
    expect(models).toBe(0)
    expect(trainer.train(1)).toBe(false)
  })
})

describe("route templates (where a campaign's challenge applies)", () => {
  it('match a path segment by segment: parameters take one segment, a * the rest', () => {
    expect(matchesTemplate('/users/:id/login', '/users/42/login')).toBe(true)
    expect(matchesTemplate('/users/:id(\\d+)', '/users/42')).toBe(true)
    expect(matchesTemplate('/users/{id}', '/users/42')).toBe(true)
    expect(matchesTemplate('/files/*', '/files/a/b.txt')).toBe(true)
    expect(matchesTemplate('/login', '/login')).toBe(true)
    expect(matchesTemplate('/users/:id/login', '/users//login')).toBe(false)
    expect(matchesTemplate('/users/:id/login', '/users/42/logout')).toBe(false)
    expect(matchesTemplate('/users/:id', '/users/42/login')).toBe(false)
    expect(matchesTemplate('/files/*', '/files')).toBe(false)
    expect(matchesTemplate('/login', '/login/')).toBe(false)
  })
})
