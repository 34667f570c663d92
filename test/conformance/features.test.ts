import { afterEach, describe, expect, it, vi } from 'vitest'
import type { AegisOptions, Logger } from '@aegis/core'
import { rawRequest } from '../helpers/raw-http.js'
import { adapters, type TestApp } from './apps.js'

const fetchText = async (url: string, init?: RequestInit) => {
  const r = await fetch(url, init)
  return { status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() }
}

const memoryLogger = () => {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = []
  const log = (level: string) => (obj: object, msg?: string) =>
    void lines.push({ level, obj: obj as Record<string, unknown>, ...(msg === undefined ? {} : { msg }) })
  const logger: Logger = { info: log('info'), warn: log('warn'), error: log('error') }
  return { logger, lines }
}

describe.each(adapters)('%s: options behave the same', (_name, make) => {
  let app: TestApp | undefined
  const start = async (options: AegisOptions) => (app = await make(options))
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  it('CORS: answers preflights itself, reflects allowed origins, sets Vary: Origin', async () => {
    const a = await start({
      cors: { origin: ['https://app.example'], credentials: true, exposedHeaders: ['x-total'] },
    })
    const pre = await fetchText(`${a.url}/people`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    })
    expect(pre.status).toBe(204)
    expect(pre.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example',
      'access-control-allow-credentials': 'true',
      'access-control-allow-headers': 'content-type',
      'access-control-max-age': '600',
      'x-content-type-options': 'nosniff',
    })
    expect(pre.headers['access-control-allow-methods']).toContain('POST')
    expect(pre.headers.vary).toContain('Origin')

    const denied = await fetchText(`${a.url}/people`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    })
    expect(denied.status).toBe(403)
    expect(denied.headers['content-type']).toMatch(/problem\+json/)
    expect(denied.headers['access-control-allow-origin']).toBeUndefined()

    const simple = await fetchText(`${a.url}/`, { headers: { origin: 'https://app.example' } })
    expect(simple.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example',
      'access-control-expose-headers': 'x-total',
    })
    expect(simple.headers.vary).toMatch(/Origin/)
    const other = await fetchText(`${a.url}/`, { headers: { origin: 'https://evil.example' } })
    expect(other.status).toBe(200)
    expect(other.headers['access-control-allow-origin']).toBeUndefined()
    expect(other.headers.vary).toMatch(/Origin/)
  })

  it('CORS: patterns and functions decide too', async () => {
    const a = await start({ cors: { origin: (o) => o.endsWith('.trusted.example') } })
    expect(
      (await fetchText(`${a.url}/`, { headers: { origin: 'https://x.trusted.example' } })).headers[
        'access-control-allow-origin'
      ],
    ).toBe('https://x.trusted.example')
    expect(
      (await fetchText(`${a.url}/`, { headers: { origin: 'https://trusted.example.evil' } })).headers[
        'access-control-allow-origin'
      ],
    ).toBeUndefined()
  })

  it('skip(req) takes a request out of the guards', async () => {
    const a = await start({ skip: (req) => req.headers['x-internal'] === 'yes' })
    const raw = (extra: string) => rawRequest(a.port, `GET /../x HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`)
    expect((await raw('')).status).toBe(400)
    expect((await raw('X-Internal: yes\r\n')).status).not.toBe(400)
  })

  it('onReject rewrites a rejection (and never sees a successful preflight)', async () => {
    const seen: number[] = []
    const a = await start({
      cors: { origin: 'https://app.example' },
      onReject: (rejection) => {
        seen.push(rejection.status)
        return {
          ...rejection,
          headers: { ...rejection.headers, 'x-rejected-by': 'aegis' },
          body: JSON.stringify({ custom: rejection.reason }),
        }
      },
    })
    const res = await rawRequest(a.port, 'TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    expect(res.status).toBe(405)
    expect(res.headers['x-rejected-by']).toBe('aegis')
    expect(JSON.parse(res.body)).toEqual({ custom: 'method' })
    const pre = await fetchText(`${a.url}/`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' },
    })
    expect(pre.status).toBe(204)
    expect(seen).toEqual([405])
  })

  it('onReject returning an answer that cannot be written: the original is sent, warned once', async () => {
    const { logger, lines } = memoryLogger()
    const returns: unknown[] = [
      { status: 200, reason: 'ok', headers: {}, body: 'fine' },
      { status: 429, reason: 'x', headers: { 'content-length': '1' }, body: 'a longer body' },
      { status: 429, reason: 'x', headers: { 'x-a': 'a\r\nset-cookie: b' }, body: '' },
    ]
    let i = 0
    const a = await start({ logger, onReject: () => returns[i++ % returns.length] as never })
    for (let n = 0; n < returns.length; n++) {
      const res = await rawRequest(a.port, 'TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n')
      expect(res.status).toBe(405)
      expect(res.headers['content-type']).toMatch(/problem\+json/)
      expect(res.headers['set-cookie']).toBeUndefined()
      expect(JSON.parse(res.body)).toMatchObject({ status: 405 })
    }
    const warned = lines.filter((l) => l.obj.code === 'AEGIS_WARN_INVALID_REJECTION')
    expect(warned).toHaveLength(1)
    expect(warned[0]?.msg).toMatch(/400-599/)
  })

  it('refuses NUL, CR and LF in the path even with traversal checks off', async () => {
    const a = await start({ validator: { traversal: false } })
    expect((await rawRequest(a.port, 'GET /a/../b HTTP/1.1\r\nHost: localhost\r\n\r\n')).status).not.toBe(400)
    const res = await rawRequest(a.port, 'GET /a%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: localhost\r\n\r\n')
    expect(res.status).toBe(400)
    expect(res.headers['set-cookie']).toBeUndefined()
  })

  it('trustProxy: reads X-Forwarded-For only through trusted proxies', async () => {
    let a = await start({})
    expect(
      JSON.parse(
        (await fetchText(`${a.url}/users/1`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).body,
      ).client,
    ).toBe('127.0.0.1')
    await a.close()
    a = await start({ trustProxy: ['loopback'] })
    expect(
      JSON.parse(
        (await fetchText(`${a.url}/users/1`, { headers: { 'x-forwarded-for': '203.0.113.9' } })).body,
      ).client,
    ).toBe('203.0.113.9')
  })

  it('headers: configurable, and false turns them off', async () => {
    let a = await start({
      headers: {
        frameOptions: 'SAMEORIGIN',
        hsts: false,
        contentSecurityPolicy: { 'default-src': ["'self'"], 'upgrade-insecure-requests': true },
      },
    })
    let res = await fetchText(`${a.url}/`)
    expect(res.headers['x-frame-options']).toBe('SAMEORIGIN')
    expect(res.headers['strict-transport-security']).toBeUndefined()
    expect(res.headers['content-security-policy']).toBe("default-src 'self'; upgrade-insecure-requests")
    await a.close()
    a = await start({ headers: false })
    res = await fetchText(`${a.url}/`)
    expect(res.headers['x-content-type-options']).toBeUndefined()
  })

  it('Server-Timing and the access log (masked client, no query, no secrets)', async () => {
    const { logger, lines } = memoryLogger()
    const a = await start({ serverTiming: true, accessLog: true, logger })
    const res = await fetchText(`${a.url}/users/9?token=secret`, {
      headers: { authorization: 'Bearer hunter2', cookie: 'sid=s3cr3t' },
    })
    expect(res.headers['server-timing']).toMatch(/^aegis;dur=\d+\.\d{3};desc="Aegis guards"$/)
    await vi.waitFor(() => expect(lines.some((l) => l.msg === 'request completed')).toBe(true))
    const entry = lines.find((l) => l.msg === 'request completed')
    expect(entry?.obj).toMatchObject({
      method: 'GET',
      path: '/users/9',
      route: '/users/:id',
      status: 200,
      client: '127.0.0.0/24',
    })
    const text = JSON.stringify(lines)
    for (const secret of ['secret', 'hunter2', 's3cr3t', '127.0.0.1']) expect(text).not.toContain(secret)
  })
})
