import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { authorityPort, inspectPath, normalizeHost } from '../src/index.js'
import { percentDecode } from '../src/validator/index.js'
import { compileHostAllowlist } from '../src/validator/host.js'

describe('inspectPath', () => {
  it.each([
    ['/a/b/c', 'ok'],
    ['/files/a..b/c', 'ok'],
    ['/search?q=../x', 'ok'], // callers pass the path only; a query is data
    ['/%41%42', 'ok'],
    ['/../etc', 'traversal'],
    ['/a/..', 'traversal'],
    ['/%2e%2e/etc', 'traversal'],
    ['/%2E%2e%2fetc', 'traversal'],
    ['/%252e%252e%252fetc', 'traversal'],
    ['/%25252e%25252e/etc', 'traversal'],
    ['/..%5cwin', 'traversal'],
    ['/..\\win', 'traversal'],
    ['/..;jsessionid=1/admin', 'traversal'],
    ['/%c0%ae%c0%ae/etc', 'traversal'],
    ['/%e0%80%ae%e0%80%ae/etc', 'traversal'],
    ['/%uff0e%uff0e%u2215etc', 'traversal'],
    ['/a%00.txt', 'control'],
    ['/r%0d%0aSet-Cookie:x', 'control'],
  ] as const)('%s → %s', (path, verdict) => {
    expect(inspectPath(path.split('?')[0] ?? path)).toBe(verdict)
  })

  it('never throws, and flags every literal dot-dot segment', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect(['ok', 'traversal', 'control']).toContain(inspectPath(s))
      }),
    )
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[a-z0-9]{0,5}$/)),
        fc.array(fc.stringMatching(/^[a-z0-9]{0,5}$/)),
        (a, b) => {
          expect(inspectPath(`/${[...a, '..', ...b].join('/')}`)).toBe('traversal')
        },
      ),
    )
  })

  it('decodes tolerantly', () => {
    expect(percentDecode('%zz%41%')).toBe('%zzA%')
    expect(percentDecode('%e2%82%ac')).toBe('€')
  })
})

describe('normalizeHost', () => {
  it.each([
    ['Example.COM', 'example.com'],
    ['example.com.:8080', 'example.com'],
    ['example.com:', 'example.com'],
    ['[::1]:80', '[::1]'],
    ['127.0.0.1:3000', '127.0.0.1'],
  ])('%s → %s', (input, out) => expect(normalizeHost(input)).toBe(out))

  it.each([
    '',
    '.',
    'a..b',
    '.a',
    'a/b',
    'a\\b',
    'a:1:2',
    'a:99999',
    '[::1',
    '[::1].',
    'x[::1]',
    'a b',
    'a\u0002',
  ])('refuses %j', (input) => expect(normalizeHost(input)).toBeUndefined())

  it('matches allowlists on the normalised host', () => {
    const allowed = compileHostAllowlist(['Example.com.', '*.api.example.com', /^tenant-\d+\.example\.net$/])
    expect(allowed('example.com')).toBe(true)
    expect(allowed('v1.api.example.com')).toBe(true)
    expect(allowed('api.example.com')).toBe(false)
    expect(allowed('evilapi.example.com')).toBe(false)
    expect(allowed('tenant-7.example.net')).toBe(true)
    expect(allowed('example.org')).toBe(false)
  })

  it.each([
    ['example.com', 80, 80],
    ['example.com:', 443, 443],
    ['example.com:8080', 80, 8080],
    ['example.com.:080', 80, 80],
    ['[::1]', 443, 443],
    ['[::1]:8443', 80, 8443],
  ])('authorityPort(%j, %d) → %d', (authority, fallback, port) =>
    expect(authorityPort(authority, fallback)).toBe(port),
  )
})
