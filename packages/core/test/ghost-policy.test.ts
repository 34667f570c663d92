/**
 * The ghost cache's rules, before any engine uses them: what a shared cache may learn
 * (RFC 9111 §3), what it may never serve stale (§4.2.4), how fresh a response is
 * (§4.2.1, §4.2.3), and a key that no unkeyed input can steer.
 */
import { IncomingMessage, type IncomingHttpHeaders } from 'node:http'
import { Socket } from 'node:net'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { parseCacheControl, secondsOf } from '../src/ghost/cache-control.js'
import { baseKey, fullKey, keyHost } from '../src/ghost/key.js'
import { freshness, refusal, staleForbidden, varyNames } from '../src/ghost/policy.js'

const request = (method: string, headers: IncomingHttpHeaders = {}): IncomingMessage => {
  const req = new IncomingMessage(new Socket())
  req.method = method
  req.headers = { host: 'example.com', ...headers }
  return req
}

describe('Cache-Control', () => {
  it('reads directives, quoted values and repeated fields; never throws', () => {
    const cc = parseCacheControl(['public, max-age=60', 'no-cache="set-cookie, x-a", S-MAXAGE=5'])
    expect(cc.get('public')).toBe(true)
    expect(secondsOf(cc, 'max-age')).toBe(60)
    expect(cc.get('no-cache')).toBe('set-cookie, x-a')
    expect(secondsOf(cc, 's-maxage')).toBe(5)
    fc.assert(fc.property(fc.string(), (s) => void parseCacheControl(s)))
  })

  it('takes a malformed or duplicated delta-seconds as 0 (stale), and caps a huge one at 2^31', () => {
    expect(secondsOf(parseCacheControl('max-age=abc'), 'max-age')).toBe(0)
    expect(secondsOf(parseCacheControl('max-age=60, max-age=3600'), 'max-age')).toBe(0)
    expect(secondsOf(parseCacheControl('max-age'), 'max-age')).toBe(0)
    expect(secondsOf(parseCacheControl('max-age=99999999999999'), 'max-age')).toBe(2 ** 31)
    expect(secondsOf(parseCacheControl('public'), 'max-age')).toBeUndefined()
  })
})

describe('what may be learned', () => {
  const ok = { 'cache-control': 'max-age=60' }

  it('a 200 to a GET or HEAD, with or without caching headers', () => {
    expect(refusal(request('GET'), 200, ok)).toBeUndefined()
    expect(refusal(request('HEAD'), 200, {})).toBeUndefined()
  })

  it('never another method, nor a status the route did not opt into', () => {
    expect(refusal(request('POST'), 200, ok)).toBe('method')
    expect(refusal(request('GET'), 500, ok)).toBe('status')
    expect(refusal(request('GET'), 404, ok)).toBe('status')
    expect(refusal(request('GET'), 404, ok, { statuses: new Set([200, 404]) })).toBeUndefined()
  })

  it('never no-store, private, Set-Cookie or Vary: *', () => {
    expect(refusal(request('GET'), 200, { 'cache-control': 'no-store' })).toBe('no-store')
    expect(refusal(request('GET'), 200, { 'cache-control': 'public, PRIVATE' })).toBe('private')
    expect(refusal(request('GET'), 200, { 'set-cookie': ['sid=1'] })).toBe('set-cookie')
    expect(refusal(request('GET'), 200, { vary: 'Accept, *' })).toBe('vary-star')
  })

  it('never an answer to credentials, unless the route keys on them', () => {
    expect(refusal(request('GET', { authorization: 'Bearer x' }), 200, ok)).toBe('credentials')
    expect(refusal(request('GET', { cookie: 'sid=1' }), 200, ok)).toBe('credentials')
    expect(refusal(request('GET', { cookie: 'sid=1' }), 200, ok, { credentialed: true })).toBeUndefined()
  })

  it('never an answer to a request with a body, or with a header some backends route by', () => {
    expect(refusal(request('GET', { 'content-length': '5' }), 200, ok)).toBe('request-body')
    expect(refusal(request('GET', { 'transfer-encoding': 'chunked' }), 200, ok)).toBe('request-body')
    expect(refusal(request('GET', { 'content-length': '0' }), 200, ok)).toBeUndefined()
    for (const name of ['x-original-url', 'x-rewrite-url', 'x-forwarded-host', 'x-http-method-override'])
      expect(refusal(request('GET', { [name]: '/admin' }), 200, ok)).toBe('unkeyed-header')
  })
})

describe('what may never be served stale (RFC 9111 §4.2.4)', () => {
  it.each(['no-cache', 'must-revalidate', 'proxy-revalidate', 's-maxage=10', 'max-age=5, NO-CACHE'])(
    '%s',
    (field) => expect(staleForbidden(parseCacheControl(field))).toBe(true),
  )
  it('but a plain max-age, stale-if-error or no directive may', () => {
    for (const field of ['max-age=60', 'public, stale-if-error=300', ''])
      expect(staleForbidden(parseCacheControl(field))).toBe(false)
  })
})

describe('freshness', () => {
  const now = Date.parse('2026-12-07T10:00:00Z')
  it('s-maxage over max-age over Expires − Date; none: stale at once', () => {
    expect(freshness({ 'cache-control': 'max-age=60, s-maxage=10' }, now).lifetimeMs).toBe(10_000)
    expect(freshness({ 'cache-control': 'max-age=60' }, now).lifetimeMs).toBe(60_000)
    const date = new Date(now - 5_000).toUTCString()
    const expires = new Date(now + 25_000).toUTCString()
    expect(freshness({ date, expires }, now).lifetimeMs).toBe(30_000)
    expect(freshness({ expires: '0' }, now).lifetimeMs).toBe(0)
    expect(freshness({}, now).lifetimeMs).toBe(0)
  })
  it('the age at receipt: the larger of Age and now − Date', () => {
    expect(freshness({ age: '30' }, now).ageMs).toBe(30_000)
    expect(freshness({ age: '3', date: new Date(now - 10_000).toUTCString() }, now).ageMs).toBe(10_000)
    // An Age that is not one field of digits cannot be trusted: as old as can be, stale at once.
    for (const age of ['-4', 'abc', '7200.0', '0, 0', '7200;foo=bar'])
      expect(freshness({ age, 'cache-control': 'max-age=3600' }, now).ageMs).toBe(2 ** 31 * 1000)
  })

  it('reads Surrogate-Control addressed to every surrogate: its max-age and no-store win', () => {
    expect(
      freshness({ 'cache-control': 'max-age=1', 'surrogate-control': 'max-age=100' }, now).lifetimeMs,
    ).toBe(100_000)
    // A directive for a named target is not ours.
    expect(
      freshness({ 'cache-control': 'max-age=1', 'surrogate-control': 'max-age=100;cdn-a' }, now).lifetimeMs,
    ).toBe(1000)
    expect(
      refusal(request('GET'), 200, { 'cache-control': 'max-age=60', 'surrogate-control': 'no-store' }),
    ).toBe('no-store')
  })
})

describe('the key', () => {
  it('GET and HEAD share one; the query is order-free; the host is case- and default-port-free', () => {
    expect(baseKey('HEAD', 'Example.COM:80', '/items?b=2&a=1')).toBe(
      baseKey('GET', 'example.com', '/items?a=1&b=2'),
    )
    // Dot segments stay: an app reached without the gateway sees them (ghost-attacks.test.ts).
    expect(baseKey('GET', 'example.com', '/a/./b?&x=1&')).toBe('GET example.com/a/./b?x=1')
    expect(keyHost('example.com:8080')).toBe('example.com:8080')
  })

  it('keeps a `;` inside its parameter (no cloaking), and apart what differs', () => {
    expect(baseKey('GET', 'h', '/p?a=1;b=2')).not.toBe(baseKey('GET', 'h', '/p?a=1'))
    expect(baseKey('GET', 'h', '/p?a=1')).not.toBe(baseKey('GET', 'h', '/p?a=2'))
    expect(baseKey('GET', 'h', '/p')).not.toBe(baseKey('GET', 'other', '/p'))
  })

  it('holds the fields the response varies on (a missing one too), and a credential only as a hash', () => {
    const base = baseKey('GET', 'h', '/')
    const vary = varyNames('Accept-Language') as string[]
    const fr = fullKey(base, vary, { 'accept-language': 'fr' })
    expect(fr).not.toBe(fullKey(base, vary, { 'accept-language': 'en' }))
    expect(fullKey(base, vary, {})).not.toBe(fr)
    expect(fullKey(base, vary, { 'accept-language': ' fr ' })).toBe(fr)
    const alice = fullKey(base, [], { cookie: 'sid=alice' }, true)
    expect(alice).not.toBe(fullKey(base, [], { cookie: 'sid=bob' }, true))
    expect(alice).not.toContain('alice')
  })

  it('ignores the fields the response does not vary on', () => {
    fc.assert(
      fc.property(fc.string(), (value) => {
        const base = baseKey('GET', 'h', '/')
        expect(fullKey(base, ['accept'], { accept: 'a', 'x-forwarded-host': value })).toBe(
          fullKey(base, ['accept'], { accept: 'a' }),
        )
      }),
    )
  })
})
