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
