/**
 * The ghost cache's bounds and control against an attacker (the rest of the attacker's pass is
 * in ghost-attacks.test.ts): Aegis' per-client fields never replayed to another client, the
 * variants of one URL and a Redis store's URLs bounded, a purge that forgets credentialed
 * copies too and refuses what it cannot read.
 */
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, inject, it } from 'vitest'
import { hit } from '../helpers/hit.js'
import { rawApps, type AttackApp, type RawHandler } from './ghost-attack-apps.js'

const isGhost = (r: { headers: Record<string, string | string[] | undefined> }): boolean =>
  r.headers['x-aegis-ghost'] === '1'

/** A page handler that answers `page <url>` until `fail()`, then `503 down`. */
function flaky(): { handler: RawHandler; fail: () => void } {
  let failing = false
  return {
    fail: () => void (failing = true),
    handler: (req, res) => {
      if (failing) return void res.writeHead(503, { 'content-type': 'text/plain' }).end('down')
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`page ${req.url}`)
    },
  }
}

describe.each(rawApps)('ghost cache on %s, open', (_name, create) => {
  let app: AttackApp | undefined
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  // Aegis' own fields (RateLimit, Server-Timing) on the app's answer are the learning client's: not kept.
  it("never replays another client's RateLimit fields over the current one's", async () => {
    const page = flaky()
    app = await create({ ghost: true }, page.handler)
    const learned = await hit(app.port, '/p')
    for (let i = 0; i < 3; i++) await hit(app.port, '/other')
    page.fail()
    const ghost = await hit(app.port, '/p')
    expect(isGhost(ghost)).toBe(true)
    expect(ghost.headers.ratelimit).not.toBe(learned.headers.ratelimit)
  })
})

describe('ghost store bounds and purge, open', () => {
  let app: AttackApp | undefined
  afterEach(async () => {
    await app?.close()
    app = undefined
  })
  const node = rawApps.find(([n]) => n === 'node')![1]

  // A client cycling a Vary'd field (User-Agent) cannot grow one URL's entry, nor the cost of its lookups.
  it('holds a bounded number of variants of one URL', async () => {
    let n = 0
    app = await node({ ghost: true, limiter: false }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', vary: 'User-Agent' })
      res.end(`page ${++n}`)
    })
    for (let i = 0; i < 300; i++) await hit(app.port, '/ua', { headers: { 'user-agent': `bot/${i}` } })
    expect((await app.core.ghost!.list()).length).toBeLessThanOrEqual(64)
  })

  // Every distinct URL would otherwise stay in Redis (the limiter's Redis) for maxStale.
  it('keeps a flood of distinct URLs within maxEntries (Redis store)', async () => {
    const page = flaky()
    app = await node(
      {
        ghost: { store: 'redis', maxEntries: 20 },
        limiter: false,
        store: { redis: inject('redisUrl'), prefix: `aegis-test:${randomUUID()}:` },
      },
      page.handler,
    )
    for (let i = 0; i < 100; i++) await hit(app.port, `/flood?i=${i}`)
    expect((await app.core.ghost!.list()).length).toBeLessThanOrEqual(20)
  })

  // An entry learned for a credential lives under the key and a hash of the credential.
  it('purge({ key }) forgets the credentialed copies of the URL too', async () => {
    const page = flaky()
    app = await node({ ghost: { credentials: true } }, page.handler)
    await hit(app.port, '/doc', { headers: { host: 'x', authorization: 'Bearer a' } })
    await hit(app.port, '/doc', { headers: { host: 'x' } })
    expect((await app.core.ghost!.list()).length).toBe(2)
    await app.core.ghost!.purge({ key: 'GET x/doc' })
    expect(await app.core.ghost!.list()).toEqual([])
  })

  // `{}` would purge the prefix `undefined`, `{ prefix: '' }` everything.
  it('rejects a purge it cannot read, with a clear error', async () => {
    app = await node({ ghost: true }, flaky().handler)
    await expect(app.core.ghost!.purge({} as never)).rejects.toThrow(/key|prefix/)
  })
})
