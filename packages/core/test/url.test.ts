import { describe, expect, it } from 'vitest'
import { normalizeTarget } from '../src/kernel/url.js'

describe('normalizeTarget', () => {
  it.each([
    ['/api/./login', '/api/login'],
    ['/api/%2e/login', '/api/login'],
    ['/api/%2E/./%2e/login?x=/./y', '/api/login?x=/./y'],
    ['/a/.', '/a/'],
    ['/a/%2e', '/a/'],
    ['/.', '/'],
    ['/a//./b', '/a//b'],
  ])('removes the single-dot segments of %s (RFC 3986 §5.2.4)', (url, normal) => {
    expect(normalizeTarget(url)).toBe(normal)
  })

  it.each([
    'http://./api/login',
    'http://%2e/x',
    '*',
    '',
    '?x',
    '/',
    '/api/login',
    '/api/.hidden',
    '/a/%2f/b',
    '/a/..',
    '/x?/./',
    '/a/%2e%2e/b',
    '/files/v1.2/x',
  ])('returns %s itself when it has none (dot-dot is the validator’s to refuse)', (url) => {
    expect(normalizeTarget(url)).toBe(url)
  })
})
