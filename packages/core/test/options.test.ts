import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Cluster, Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import {
  AegisConfigError,
  AegisError,
  ErrorCodes,
  WarningCodes,
  createAegis,
  parseOptions,
  type AegisOptions,
} from '../src/index.js'
import { parseAddress } from '../src/client/index.js'
import { checkedRejection } from '../src/options/reject.js'
import { settingsOf } from '../src/ghost/options.js'

const issuesOf = (fn: () => unknown): { path: string; message: string; received?: string }[] => {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(AegisConfigError)
    expect(err).toBeInstanceOf(AegisError)
    expect((err as AegisConfigError).code).toBe(ErrorCodes.CONFIG)
    return [...(err as AegisConfigError).issues]
  }
  throw new Error('expected AegisConfigError')
}

describe('options', () => {
  it('needs no options and yields safe defaults', () => {
    const config = parseOptions()
    expect(config.trustProxy).toBe(false)
    expect(config.ipv6Subnet).toBe(64)
    expect(config.cors).toBe(false)
    expect(config.validator).toMatchObject({ maxBodyBytes: 1_048_576, maxHeaders: 100, maxHeaderBytes: 8192 })
    expect(config.validator && config.validator.methods).toEqual([
      'GET',
      'HEAD',
      'POST',
      'PUT',
      'PATCH',
      'DELETE',
      'OPTIONS',
    ])
    expect(config.headers).toMatchObject({ frameOptions: 'DENY', contentSecurityPolicy: false })
    expect(Object.isFrozen(config)).toBe(true)
    expect(Object.isFrozen(config.validator)).toBe(true)
  })

  it('lists every bad path at once', () => {
    const issues = issuesOf(() =>
      createAegis({
        validator: { maxBodyBytes: -1, methods: ['GET', 'BAD METHOD'] },
        headers: { frameOptions: 'ALLOW' as never },
        metrics: { buckets: [] },
        accessLog: 'yes' as never,
      }),
    )
    const paths = issues.map((i) => i.path)
    expect(paths).toEqual(
      expect.arrayContaining([
        'validator.maxBodyBytes',
        'validator.methods.1',
        'headers.frameOptions',
        'metrics.buckets',
        'accessLog',
      ]),
    )
    expect(issues.find((i) => i.path === 'validator.maxBodyBytes')?.received).toBe('-1')
  })

  it('names unknown keys', () => {
    const issues = issuesOf(() => parseOptions({ validatr: {}, headers: { nosniff: true } } as never))
    expect(issues).toEqual(
      expect.arrayContaining([
        { path: 'validatr', message: 'unknown option', segments: ['validatr'] },
        { path: 'headers.nosniff', message: 'unknown option', segments: ['headers', 'nosniff'] },
      ]),
    )
  })

  it('refuses trustProxy: true with the reason', () => {
    const [issue] = issuesOf(() => parseOptions({ trustProxy: true as never }))
    expect(issue?.path).toBe('trustProxy')
    expect(issue?.message).toMatch(/true is refused/)
    expect(issuesOf(() => parseOptions({ trustProxy: ['10.0.0.0/8', 'nonsense'] }))[0]?.path).toBe(
      'trustProxy.1',
    )
  })

  it('refuses a wildcard origin with credentials', () => {
    const [issue] = issuesOf(() => parseOptions({ cors: { origin: '*', credentials: true } }))
    expect(issue?.path).toBe('cors.origin')
  })

  it('redacts secrets in what it reports', () => {
    const issues = issuesOf(() =>
      parseOptions({ cors: { origin: 'redis://user:hunter2@host:6379' as never, maxAge: -1 } }),
    )
    const text = JSON.stringify(issues)
    expect(text).not.toContain('hunter2')
    const err = (() => {
      try {
        parseOptions({ cors: { origin: ['https://ok.example', 'https://admin:s3cret@x.example:bad'] } })
      } catch (e) {
        return e as AegisConfigError
      }
    })()
    expect(err?.message ?? '').not.toContain('s3cret')
  })

  it('never mutates the caller object', () => {
    const input = { validator: { maxBodyBytes: 10 } }
    const snapshot = structuredClone(input)
    parseOptions(input)
    expect(input).toEqual(snapshot)
  })

  it('refuses an access log with nowhere to write', () => {
    expect(issuesOf(() => parseOptions({ accessLog: true }))[0]?.path).toBe('accessLog')
  })

  it('accepts false for every engine section', () => {
    const config = parseOptions({ validator: false, headers: false, cors: false, metrics: false })
    expect(config.validator).toBe(false)
    expect(config.headers).toBe(false)
    expect(config.metrics).toBe(false)
  })
})

describe('top-level breaker and chaos', () => {
  const upstreams = ['http://127.0.0.1:9']

  it('are what every proxy route that sets none starts from; a route object is laid over them', () => {
    const config = parseOptions({
      breaker: { volumeThreshold: 3 },
      chaos: { abort: { percent: 100 } },
      proxy: [
        { prefix: '/a', upstreams },
        { prefix: '/b', upstreams, breaker: false, chaos: false },
        { prefix: '/c', upstreams, breaker: { resetTimeout: 500 }, chaos: { delay: { percent: 5, ms: 10 } } },
      ],
    })
    const [a, b, c] = config.proxy
    expect(a?.breaker).toMatchObject({
      volumeThreshold: 3,
      resetTimeout: 10_000,
      errorThresholdPercentage: 50,
    })
    expect(a?.chaos).toEqual({ abort: { percent: 100, status: 503 } })
    expect(b?.breaker).toBe(false)
    expect(b?.chaos).toBe(false)
    expect(c?.breaker).toMatchObject({ volumeThreshold: 3, resetTimeout: 500 })
    expect(c?.chaos).toEqual({ delay: { percent: 5, ms: 10 } })
  })

  it('breaker: false turns breakers off on routes that set none; unset leaves each route its default', () => {
    expect(parseOptions({ breaker: false, proxy: [{ upstreams }] }).proxy[0]?.breaker).toBe(false)
    const config = parseOptions({ proxy: [{ upstreams }] })
    expect(config.breaker).toBeUndefined()
    expect(config.proxy[0]?.breaker).toMatchObject({ volumeThreshold: 10 })
    expect(config.proxy[0]?.chaos).toBe(false)
  })

  it('reports a bad top-level value once, at its own path', () => {
    const issues = issuesOf(() =>
      parseOptions({
        breaker: { volumeThreshold: 0 },
        chaos: { abort: { percent: 101 } },
        proxy: [{ upstreams }],
      }),
    )
    expect(issues.map((i) => i.path).sort()).toEqual(['breaker.volumeThreshold', 'chaos.abort.percent'])
  })

  it('reach routes added later with shield.proxy()', async () => {
    const aegis = createAegis({
      breaker: { resetTimeout: 700 },
      chaos: { abort: { percent: 10, status: 502 } },
    })
    try {
      const inherits = aegis.proxy({ prefix: '/x', upstreams, healthCheck: false }).config
      expect(inherits.breaker).toMatchObject({ resetTimeout: 700, volumeThreshold: 10 })
      expect(inherits.chaos).toEqual({ abort: { percent: 10, status: 502 } })
      const own = aegis.proxy({
        prefix: '/y',
        upstreams,
        healthCheck: false,
        breaker: false,
        chaos: false,
      }).config
      expect(own.breaker).toBe(false)
      expect(own.chaos).toBe(false)
    } finally {
      await aegis.close()
    }
  })

  it('refuses a shared top-level breaker without a store, naming the option', () => {
    expect(issuesOf(() => createAegis({ breaker: { shared: true } }))).toEqual([
      expect.objectContaining({ path: 'breaker.shared' }),
    ])
  })
})

describe('options refused at construction (issue 14, finding 12)', () => {
  const tlsFixture = (name: string): string =>
    readFileSync(fileURLToPath(new URL(`./fixtures/tls/${name}`, import.meta.url)), 'utf8')
  const route = (tls: Record<string, unknown>): AegisOptions => ({
    proxy: [{ prefix: '/a', upstreams: ['https://127.0.0.1:8443'], healthCheck: false, tls }],
  })

  it('reads addresses in trustProxy, allow and deny with the strict X-Forwarded-For parser', () => {
    // inet_aton forms: octal (010.0.0.1 is 8.0.0.1), hex, shorthand; and loose CIDR prefixes.
    for (const entry of [
      '010.0.0.1',
      '0x7f.0.0.1',
      '127.1',
      '2130706433',
      '010.0.0.0/8',
      '10.0.0.0/08',
      '10.0.0.0/33',
    ])
      expect(issuesOf(() => parseOptions({ trustProxy: [entry] }))).toEqual([
        expect.objectContaining({ path: 'trustProxy.0', message: expect.stringContaining('dotted-decimal') }),
      ])
    expect(issuesOf(() => parseOptions({ trustProxy: '::ffff:010.0.0.1' }))[0]?.path).toBe('trustProxy')
    expect(issuesOf(() => parseOptions({ limiter: { allow: ['10.0.0.1', '0x0a.0.0.1'] } }))).toEqual([
      expect.objectContaining({ path: 'limiter.allow.1' }),
    ])
    expect(issuesOf(() => parseOptions({ limiter: { deny: ['010.0.0.1'] } }))[0]?.path).toBe('limiter.deny.0')
    // The canonical forms still pass, and X-Forwarded-For reads what the options read.
    const ok = parseOptions({
      trustProxy: ['10.0.0.1', '10.0.0.0/8', '::1', 'fe80::/10', '::ffff:10.0.0.1', 'loopback'],
    })
    expect(ok.trustProxy).toHaveLength(6)
    expect(parseAddress('010.0.0.1')).toBeUndefined()
    expect(parseAddress('10.0.0.1')?.toString()).toBe('10.0.0.1')
  })

  it('refuses framing and hop-by-hop fields in headers.extra', () => {
    for (const name of [
      'content-length',
      'Transfer-Encoding',
      'connection',
      'keep-alive',
      'upgrade',
      'te',
      'trailer',
      'proxy-connection',
      'host',
    ])
      expect(issuesOf(() => parseOptions({ headers: { extra: { [name]: '5' } } }))).toEqual([
        expect.objectContaining({
          path: `headers.extra.${name}`,
          message: expect.stringContaining('framing and hop-by-hop'),
          received: JSON.stringify(name),
        }),
      ])
    expect(parseOptions({ headers: { extra: { 'x-download-options': 'noopen' } } }).headers).toMatchObject({
      extra: { 'x-download-options': 'noopen' },
    })
  })

  it('refuses unsorted or duplicate metrics.buckets', () => {
    for (const buckets of [
      [1, 0.5],
      [0.1, 0.1, 1],
      [0.1, Number.POSITIVE_INFINITY],
      [0, 1],
    ])
      expect(issuesOf(() => parseOptions({ metrics: { buckets } }))).toEqual([
        expect.objectContaining({ path: expect.stringMatching(/^metrics\.buckets/) }),
      ])
    expect(parseOptions({ metrics: { buckets: [0.1, 0.5, 2] } }).metrics).toMatchObject({
      buckets: [0.1, 0.5, 2],
    })
  })

  it('refuses burst on a fixed window, named or inherited, at the top level and per route', () => {
    expect(issuesOf(() => parseOptions({ limiter: { algorithm: 'fixed-window', burst: 3 } }))).toEqual([
      expect.objectContaining({ path: 'limiter.burst', message: expect.stringContaining('gcra') }),
    ])
    const policy = { points: 5, duration: 1, burst: 2 }
    expect(
      issuesOf(() =>
        parseOptions({ limiter: { routes: { '/x': { ...policy, algorithm: 'fixed-window' } } } }),
      ),
    ).toEqual([expect.objectContaining({ path: 'limiter.routes./x.burst' })])
    expect(
      issuesOf(() =>
        parseOptions({
          limiter: {
            algorithm: 'fixed-window',
            routes: { '/x': policy, 'POST /y': [{ points: 1, duration: 1 }, policy] },
          },
        }),
      ).map((i) => i.path),
    ).toEqual(['limiter.routes./x.burst', 'limiter.routes.POST /y.1.burst'])
    // A route policy that names gcra keeps its burst under a fixed-window default.
    expect(() =>
      parseOptions({
        limiter: { algorithm: 'fixed-window', routes: { '/x': { ...policy, algorithm: 'gcra' } } },
      }),
    ).not.toThrow()
  })

  it('refuses an unparsable tls.ca, cert or key, and a key that does not match', () => {
    expect(issuesOf(() => parseOptions(route({ ca: 'nope' })))).toEqual([
      expect.objectContaining({ path: 'proxy.0.tls.ca', message: expect.stringContaining('PEM') }),
    ])
    const broken = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'
    expect(
      issuesOf(() => parseOptions(route({ ca: [tlsFixture('cert.pem'), Buffer.from(broken)] }))),
    ).toEqual([
      expect.objectContaining({ path: 'proxy.0.tls.ca', message: expect.stringContaining('does not parse') }),
    ])
    expect(issuesOf(() => parseOptions(route({ cert: tlsFixture('cert.pem'), key: 'not a key' })))).toEqual([
      expect.objectContaining({ path: 'proxy.0.tls.key' }),
    ])
    expect(
      issuesOf(() => parseOptions(route({ cert: tlsFixture('cert.pem'), key: tlsFixture('other-key.pem') }))),
    ).toEqual([
      expect.objectContaining({ path: 'proxy.0.tls.key', message: expect.stringContaining('match') }),
    ])
    expect(issuesOf(() => parseOptions(route({ cert: tlsFixture('cert.pem') })))).toEqual([
      expect.objectContaining({ path: 'proxy.0.tls', message: 'tls.cert and tls.key go together' }),
    ])
    expect(issuesOf(() => parseOptions({ store: { redis: { tls: { ca: 'nope' } } } }))).toEqual([
      expect.objectContaining({ path: 'store.redis.tls.ca' }),
    ])
    // Valid PEMs pass, as strings and buffers.
    const ok = parseOptions(
      route({
        ca: Buffer.from(tlsFixture('cert.pem')),
        cert: tlsFixture('cert.pem'),
        key: tlsFixture('key.pem'),
      }),
    )
    expect(ok.proxy[0]?.tls?.cert).toBe(tlsFixture('cert.pem'))
  })

  it('checks the known fields of ioredis options, and still takes a Redis or Cluster client', () => {
    expect(issuesOf(() => parseOptions({ store: { redis: { port: 'x' } } }))).toEqual([
      expect.objectContaining({ path: 'store.redis.port', received: '"x"' }),
    ])
    expect(
      issuesOf(() => parseOptions({ store: { redis: { host: '', port: 70_000, db: -1, family: 5 } } })).map(
        (i) => i.path,
      ),
    ).toEqual(['store.redis.host', 'store.redis.port', 'store.redis.family', 'store.redis.db'])
    expect(
      issuesOf(() =>
        parseOptions({
          store: { cluster: ['redis://127.0.0.1:7000'], redis: { redisOptions: { port: 1.5 } } },
        }),
      ),
    ).toEqual([expect.objectContaining({ path: 'store.redis.redisOptions.port' })])
    // Valid options, other ioredis fields, and client instances pass untouched.
    const retryStrategy = (): number => 100
    const options = {
      host: '127.0.0.1',
      port: 6379,
      db: 2,
      maxRetriesPerRequest: 3,
      tls: { servername: 'r' },
      retryStrategy,
    }
    expect(parseOptions({ store: { redis: options } }).store.redis).toEqual(options)
    // Copied, never frozen in place: the caller's object stays theirs.
    expect(Object.isFrozen(options) || Object.isFrozen(options.tls)).toBe(false)
    const client = new Redis({ lazyConnect: true })
    const cluster = new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true })
    try {
      expect(parseOptions({ store: { redis: client } }).store.redis).toBe(client)
      expect(parseOptions({ store: { redis: cluster } }).store.redis).toBe(cluster)
    } finally {
      client.disconnect()
      cluster.disconnect()
    }
  })
})

describe('checkedRejection (what onReject returns)', () => {
  const original = Object.freeze({
    status: 429,
    reason: 'rate-limited',
    headers: Object.freeze({ 'content-type': 'application/problem+json' }),
    body: '{"status":429}',
  })
  const warnings = (): { calls: string[]; warn: (code: string, message: string) => void } => {
    const calls: string[] = []
    return { calls, warn: (code) => void calls.push(code) }
  }

  it('keeps a valid rewrite, and the original for nothing returned', () => {
    const w = warnings()
    const rewritten = { ...original, status: 503, body: 'busy', headers: { 'content-type': 'text/plain' } }
    expect(checkedRejection(rewritten, original, w.warn)).toBe(rewritten)
    expect(checkedRejection(undefined, original, w.warn)).toBe(original)
    expect(w.calls).toEqual([])
  })

  it('falls back to the original rejection for anything that cannot be written, with a warning code', () => {
    const bad: unknown[] = [
      { ...original, status: 200 },
      { ...original, status: 302 },
      { ...original, status: 600 },
      { ...original, status: 429.5 },
      { ...original, status: '429' },
      { ...original, body: { not: 'a string' } },
      { ...original, reason: undefined },
      { ...original, headers: { 'bad name': 'x' } },
      { ...original, headers: { 'x-a': 'line\r\nset-cookie: x' } },
      { ...original, headers: { 'content-length': '5' } },
      { ...original, headers: null },
      42,
    ]
    for (const returned of bad) {
      const w = warnings()
      expect(checkedRejection(returned, original, w.warn)).toBe(original)
      expect(w.calls).toEqual([WarningCodes.INVALID_REJECTION])
    }
  })
})

describe('ghost options', () => {
  it('are off by default; true gives the documented defaults; a route lays its own over them', () => {
    expect(parseOptions({}).ghost).toBe(false)
    const on = parseOptions({ ghost: true }).ghost
    expect(on).toMatchObject({
      maxStale: 3600,
      ttl: 10,
      statuses: [500, 502, 503, 504],
      store: 'memory',
      app: true,
    })
    const top = parseOptions({ ghost: { maxStale: 60, statuses: [503] } }).ghost
    expect(settingsOf({ ttl: 5 }, top)).toMatchObject({ maxStale: 60, ttl: 5, statuses: [503] })
    expect(settingsOf(false, top)).toBeUndefined()
    expect(settingsOf(undefined, false)).toBeUndefined()
    expect(settingsOf(true, false)).toMatchObject({ maxStale: 3600 })
  })

  it('refuses what cannot work, naming the option', () => {
    expect(issuesOf(() => parseOptions({ ghost: { store: 'redis' } }))).toEqual([
      expect.objectContaining({ path: 'ghost.store', message: expect.stringContaining('store option') }),
    ])
    expect(issuesOf(() => parseOptions({ ghost: { statuses: [404] } }))[0]?.path).toBe('ghost.statuses.0')
    expect(issuesOf(() => parseOptions({ ghost: { learn: [500 as never] } }))[0]?.path).toMatch(
      /^ghost\.learn\.0/,
    )
    expect(issuesOf(() => parseOptions({ ghost: { maxStale: 0 } }))[0]?.path).toBe('ghost.maxStale')
    expect(issuesOf(() => parseOptions({ ghost: { nope: 1 } as never }))[0]?.path).toMatch(/^ghost/)
    const route = { prefix: '/a', upstreams: ['http://127.0.0.1:9'], healthCheck: false as const }
    expect(
      issuesOf(() => parseOptions({ proxy: [{ ...route, ghost: { store: 'redis' } as never }] }))[0]?.path,
    ).toMatch(/^proxy\.0\.ghost/)
    // Made-up answers are for staging: refused in production unless forced.
    const env = process.env.NODE_ENV
    process.env.NODE_ENV = 'production'
    try {
      expect(issuesOf(() => parseOptions({ ghost: { synthesize: true } }))).toEqual([
        expect.objectContaining({ path: 'ghost.synthesize', message: expect.stringContaining('production') }),
      ])
      expect(
        issuesOf(() => parseOptions({ proxy: [{ ...route, ghost: { synthesize: true } }] }))[0]?.path,
      ).toBe('proxy.0.ghost.synthesize')
      expect(parseOptions({ ghost: { synthesize: 'force' } }).ghost).toMatchObject({ synthesize: 'force' })
    } finally {
      process.env.NODE_ENV = env
    }
    // A route added later cannot bring the engine the options did not build.
    const core = createAegis({})
    try {
      expect(issuesOf(() => core.proxy({ ...route, ghost: true }))).toEqual([
        expect.objectContaining({ path: 'proxy.ghost', message: expect.stringContaining('top-level ghost') }),
      ])
    } finally {
      void core.close()
    }
  })
})
