import { describe, expect, it } from 'vitest'
import { AegisConfigError, AegisError, ErrorCodes, createAegis, parseOptions } from '../src/index.js'

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
        { path: 'validatr', message: 'unknown option' },
        { path: 'headers.nosniff', message: 'unknown option' },
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
