import { describe, expect, it } from 'vitest'
import { AegisConfigError, createAegis } from '../src/index.js'
import { parseUpstreamUrl, underPrefix } from '../src/gateway/index.js'
import { SmoothWeightedRoundRobin } from '../src/balancer/swrr.js'
import { reserialize } from '../src/gateway/index.js'
import { rawAnswer } from '../src/gateway/headers.js'
import { isConnectFailure, isReset, upstreamFailure } from '../src/gateway/answers.js'
import type { ExchangeOutcome } from '../src/gateway/forward.js'
import { classify } from '../src/gateway/upstream.js'

describe('operator-configured upstream URLs', () => {
  it.each([
    'http://127.0.0.1:8080',
    'http://10.0.0.5',
    'https://users.internal/v2',
    'http://[::1]:9000',
    'http://[fd00::5]',
  ])('accepts %s (private and loopback are what a gateway fronts)', (url) => {
    expect(parseUpstreamUrl(url).href.startsWith(url.split('/v2')[0] as string)).toBe(true)
  })

  it.each([
    ['ftp://10.0.0.1/', /http: or https:/],
    ['http://user:pw@10.0.0.1/', /credentials/],
    ['http://10.0.0.1/?a=1', /no query/],
    ['http://169.254.169.254/', /link-local/],
    ['http://2852039166/', /link-local/], // decimal
    ['http://0xa9fea9fe/', /link-local/], // hex
    ['http://0251.0376.0251.0376/', /link-local/], // octal
    ['http://169.254.43518/', /link-local/], // two-part form
    ['http://[::ffff:169.254.169.254]/', /link-local/], // IPv4-mapped
    ['http://[::ffff:a9fe:a9fe]/', /link-local/],
    ['http://[fe80::1]/', /link-local/],
    ['http://[fd00:ec2::254]/', /metadata/],
    ['http://100.100.100.200/', /metadata/],
    ['http://metadata.google.internal/', /metadata/],
    ['http://0.0.0.0/', /unspecified/],
    ['not a url', /absolute/],
  ])('refuses %s', (url, why) => {
    expect(() => parseUpstreamUrl(url)).toThrow(why)
  })

  it('names the option of a bad upstream at construction', () => {
    const attempt = () => createAegis({ proxy: [{ prefix: '/api', upstreams: ['http://169.254.169.254'] }] })
    expect(attempt).toThrow(AegisConfigError)
    expect(attempt).toThrow(/proxy\.0\.upstreams\.0: 169\.254\.169\.254 is link-local/)
    const core = createAegis()
    expect(() => core.proxy({ upstreams: [{ url: 'http://10.0.0.1', weight: 0 }] })).toThrow(
      /proxy\.upstreams\.0\.weight/,
    )
    expect(() => core.proxy({ prefix: '/api/', upstreams: ['http://10.0.0.1'] })).toThrow(/proxy\.prefix/)
  })
})

describe('prefix matching', () => {
  it('owns the prefix at a segment boundary only', () => {
    expect(underPrefix('/api', '/api')).toBe('')
    expect(underPrefix('/api', '/api/x?y')).toBe('/x?y')
    expect(underPrefix('/api', '/api?y')).toBe('?y')
    expect(underPrefix('/api', '/apix')).toBeUndefined()
    expect(underPrefix('/api', '/API/x')).toBeUndefined()
    expect(underPrefix('/', '/x')).toBe('/x')
    expect(underPrefix('/', 'http://evil.example/x')).toBeUndefined()
    expect(underPrefix('/', '*')).toBeUndefined()
  })
})

describe('smooth weighted round robin', () => {
  it('spreads picks as nginx does: 5:1:1 gives a a b a c a a, never five in a row', () => {
    const hosts = ['a', 'b', 'c'].map((name, i) => ({ name, weight: [5, 1, 1][i] as number }))
    const swrr = new SmoothWeightedRoundRobin(hosts)
    const picks = Array.from({ length: 14 }, () => swrr.pick((h) => h.weight)?.name).join('')
    expect(picks).toBe('aabacaaaabacaa')
  })

  it('skips hosts that are not eligible or have no weight', () => {
    const hosts = [
      { name: 'a', weight: 1 },
      { name: 'b', weight: 0 },
      { name: 'c', weight: 1 },
    ]
    const swrr = new SmoothWeightedRoundRobin(hosts)
    const picks = Array.from({ length: 4 }, () => swrr.pick((h) => (h.name === 'a' ? 0 : h.weight))?.name)
    expect(picks).toEqual(['c', 'c', 'c', 'c'])
    expect(swrr.pick(() => 0)).toBeUndefined()
  })
})

describe('re-sending a parsed body', () => {
  it('serialises it the way its content type says', () => {
    expect(reserialize({ a: 1 }, 'application/json')?.toString()).toBe('{"a":1}')
    expect(reserialize({ a: 1 }, 'application/vnd.api+json; charset=utf-8')?.toString()).toBe('{"a":1}')
    expect(reserialize({ a: 'x y', b: ['1', '2'] }, 'application/x-www-form-urlencoded')?.toString()).toBe(
      'a=x+y&b=1&b=2',
    )
    expect(reserialize('plain', 'text/plain')?.toString()).toBe('plain')
    expect(reserialize(Buffer.from('raw'), 'application/octet-stream')?.toString()).toBe('raw')
    // Shapes the type cannot carry, or nothing parsed at all.
    expect(reserialize({ a: { nested: true } }, 'application/x-www-form-urlencoded')).toBeUndefined()
    expect(reserialize({ a: 1 }, 'multipart/form-data; boundary=x')).toBeUndefined()
    expect(reserialize(undefined, 'application/json')).toBeUndefined()
  })
})

describe('rawAnswer', () => {
  it('relays end-to-end fields, adds the request id and the framing, and no length for 204', () => {
    const text = (b: Buffer) => b.toString('latin1')
    const refused = text(
      rawAnswer(
        403,
        {
          'content-type': 'text/plain',
          'content-length': '2',
          'keep-alive': 'timeout=5',
          'set-cookie': ['a=1', 'b=2'],
        },
        Buffer.from('no'),
        { name: 'x-request-id', value: 'r1' },
      ),
    )
    expect(refused).toBe(
      'HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n' +
        'x-request-id: r1\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno',
    )
    expect(
      text(rawAnswer(204, { 'x-request-id': 'up' }, Buffer.alloc(0), { name: 'x-request-id', value: 'r1' })),
    ).toBe('HTTP/1.1 204 No Content\r\nx-request-id: up\r\nconnection: close\r\n\r\n')
  })
})

describe('upstream failures: one table for the answer, the balancer and retries', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code })
  const outcome = (error: Error): ExchangeOutcome => ({
    responded: false,
    clientAborted: false,
    held: false,
    status: 0,
    error,
  })

  it.each([
    // code, status, the balancer's count, another host may be tried, the request may be sent again
    ['ECONNREFUSED', 502, 'connect-error', true, false],
    ['ENOTFOUND', 502, 'connect-error', true, false],
    ['UND_ERR_CONNECT_TIMEOUT', 504, 'connect-error', true, false],
    ['UND_ERR_HEADERS_TIMEOUT', 504, 'timeout', false, false],
    ['UND_ERR_BODY_TIMEOUT', 504, 'timeout', false, false],
    ['ETIMEDOUT', 504, 'timeout', false, false],
    ['ECONNRESET', 502, 'error', false, true],
    ['UND_ERR_SOCKET', 502, 'error', false, true],
    ['SOMETHING_ELSE', 502, 'error', false, false],
  ] as const)('%s: %i, counted as %s', (code, status, kind, unreached, reset) => {
    expect(upstreamFailure(err(code)).status).toBe(status)
    expect(classify(outcome(err(code)), true)).toBe(kind)
    expect(isConnectFailure(err(code))).toBe(unreached)
    expect(isReset(err(code))).toBe(reset)
  })
})
