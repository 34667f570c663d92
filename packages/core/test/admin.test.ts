/**
 * The admin API's parts alone: the version it reports, listen addresses, the token table,
 * the Host and Origin screen, the router, and the configuration's redaction.
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { allowedHosts, screen, tokenTable } from '../src/admin/auth.js'
import { createRouter, type AdminRoute } from '../src/admin/http.js'
import { adminSchema, isLoopbackHost, parseListen } from '../src/admin/options.js'
import { redactConfig } from '../src/admin/redact.js'
import { AEGIS_VERSION } from '../src/version.js'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string
}
const TOKEN = 'a-token-of-sixteen-characters'

describe('admin parts', () => {
  it('reports the package version', () => {
    expect(AEGIS_VERSION).toBe(pkg.version)
  })

  it('reads listen addresses, and tells loopback apart', () => {
    expect(parseListen('127.0.0.1:9901')).toEqual({ host: '127.0.0.1', port: 9901 })
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 })
    expect(parseListen(9901)).toEqual({ host: '127.0.0.1', port: 9901 })
    expect(parseListen('9901')).toEqual({ host: '127.0.0.1', port: 9901 })
    for (const bad of ['', ':80', 'host', '[nope]:80', '1.2.3.4:99999', 'a b:80'])
      expect(parseListen(bad)).toBeUndefined()
    expect(['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1'].every(isLoopbackHost)).toBe(
      true,
    )
    expect(['0.0.0.0', '::', '10.0.0.1', 'example.com'].some(isLoopbackHost)).toBe(false)
  })

  it('finds a token holder by the whole token only', () => {
    const config = adminSchema.parse({
      token: TOKEN,
      tokens: [{ name: 'viewer', token: `${TOKEN}-r`, role: 'read' }],
    })
    const tokens = tokenTable(config)
    expect(tokens.actorOf(`Bearer ${TOKEN}`)).toEqual({ name: 'admin', role: 'admin' })
    expect(tokens.actorOf(`bearer  ${TOKEN}-r`)).toEqual({ name: 'viewer', role: 'read' })
    for (const bad of [
      undefined,
      '',
      TOKEN,
      `Bearer ${TOKEN.slice(0, -1)}`,
      `Bearer ${TOKEN}x`,
      `Basic ${TOKEN}`,
    ])
      expect(tokens.actorOf(bad)).toBeUndefined()
  })

  it('screens Host (any port) and Origin', () => {
    const config = adminSchema.parse({
      token: TOKEN,
      hosts: ['ops.example.com'],
      origins: ['https://ops.example.com'],
    })
    const hosts = allowedHosts(config, { host: '::1', port: 9901 })
    const origins = new Set(config.origins)
    const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage
    expect(screen(req({ host: '127.0.0.1:9901' }), hosts, origins)).toBeUndefined()
    expect(screen(req({ host: '[::1]:9901' }), hosts, origins)).toBeUndefined()
    expect(screen(req({ host: 'OPS.example.com' }), hosts, origins)).toBeUndefined()
    expect(screen(req({}), hosts, origins)).toBe('host')
    expect(screen(req({ host: 'evil.example' }), hosts, origins)).toBe('host')
    expect(screen(req({ host: '127.0.0.1.evil.example' }), hosts, origins)).toBe('host')
    expect(
      screen(req({ host: 'localhost:9901', origin: 'http://localhost:9901' }), hosts, origins),
    ).toBeUndefined()
    expect(
      screen(req({ host: 'localhost', origin: 'https://ops.example.com' }), hosts, origins),
    ).toBeUndefined()
    expect(screen(req({ host: 'localhost', origin: 'null' }), hosts, origins)).toBe('origin')
    expect(screen(req({ host: 'localhost', 'sec-fetch-site': 'cross-site' }), hosts, origins)).toBe('origin')
  })

  it('routes by method and path, with :params decoded', () => {
    const route = (method: AdminRoute['method'], path: string): AdminRoute => ({
      method,
      path,
      role: 'read',
      summary: '',
      handle: () => undefined,
    })
    const router = createRouter([route('GET', '/a/:key'), route('DELETE', '/a/:key'), route('GET', '/b')])
    expect(router.match('GET', '/a/203.0.113.7%2F24')).toMatchObject({ params: { key: '203.0.113.7/24' } })
    expect(router.match('PUT', '/a/x')).toEqual({ methods: ['GET', 'DELETE'] })
    expect(router.match('GET', '/a/%E0%A4%A')).toBeUndefined()
    expect(router.match('GET', '/a/')).toBeUndefined()
    expect(router.match('GET', '/a/x/y')).toBeUndefined()
    expect(router.match('GET', '/c')).toBeUndefined()
  })

  it('redacts secrets, credentials in URLs, functions and objects that are not data', () => {
    class Client {}
    expect(
      redactConfig({
        admin: { token: TOKEN, tokens: [{ name: 'ops', token: TOKEN, role: 'admin' }] },
        store: { redis: 'redis://user:pw@10.0.0.1:6379', client: new Client() },
        anomaly: { allow: { apiKeys: { header: 'x-api-key', keys: ['k1'] } }, challenge: () => undefined },
        validator: { pattern: /a+/ },
        n: Infinity,
      }),
    ).toEqual({
      admin: {
        token: '[redacted]',
        tokens: [{ name: 'ops', token: '[redacted]', role: 'admin' }],
      },
      store: { redis: 'redis://***@10.0.0.1:6379', client: '[Client]' },
      anomaly: {
        allow: { apiKeys: { header: 'x-api-key', keys: ['[redacted]'] } },
        challenge: '[function]',
      },
      validator: { pattern: '/a+/' },
      n: 'Infinity',
    })
  })
})
