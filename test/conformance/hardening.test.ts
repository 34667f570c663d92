import { request } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawRequest } from '../helpers/raw-http.js'
import { adapters, type TestApp } from './apps.js'

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
}

const expectProblem = (
  res: { status: number; headers: Record<string, string>; body: string },
  status: number,
  code?: string,
): Record<string, unknown> => {
  expect(res.status).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const body = JSON.parse(res.body) as Record<string, unknown>
  expect(body).toMatchObject({ status, title: expect.any(String), type: expect.any(String) })
  if (code) expect(body.code).toBe(code)
  return body
}

const get = (
  app: TestApp,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string>; body: string }> =>
  fetch(app.url + path, { headers }).then(async (r) => ({
    status: r.status,
    headers: Object.fromEntries(r.headers),
    body: await r.text(),
  }))

const raw = (app: TestApp, head: string): ReturnType<typeof rawRequest> =>
  rawRequest(app.port, head.replace(/\n/g, '\r\n'))

describe.each(adapters)('%s with aegis() defaults', (_name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make()
  })
  afterAll(() => app.close())

  it('leaves a normal request alone and adds the security headers', async () => {
    const res = await get(app, '/users/42')
    expect(res.status).toBe(200)
    expect(JSON.parse(res.body)).toEqual({ id: '42', client: '127.0.0.1' })
    expect(res.headers).toMatchObject(SECURITY_HEADERS)
    expect(res.headers['x-powered-by']).toBeUndefined()
    expect(res.headers['content-security-policy']).toBeUndefined()
  })

  it('keeps the security headers on errors and 404s', async () => {
    const boom = await get(app, '/boom')
    expect(boom.status).toBe(500)
    expect(boom.headers).toMatchObject(SECURITY_HEADERS)
    const missing = await get(app, '/nope')
    expect(missing.status).toBe(404)
    expect(missing.headers).toMatchObject(SECURITY_HEADERS)
  })

  it('answers a method outside the allowlist with 405 and Allow', async () => {
    const res = await raw(app, 'TRACE / HTTP/1.1\nHost: localhost\n\n')
    expectProblem(res, 405, 'AEGIS_ERR_METHOD_NOT_ALLOWED')
    expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS')
    expect(res.headers['x-frame-options']).toBe('DENY')
  })

  it('refuses CONNECT with 405', async () => {
    const res = await raw(app, 'CONNECT localhost:443 HTTP/1.1\nHost: localhost:443\n\n')
    expectProblem(res, 405, 'AEGIS_ERR_METHOD_NOT_ALLOWED')
    expect(res.headers['x-content-type-options']).toBe('nosniff')
  })

  it('answers a Content-Length over maxBodyBytes with 413 and Connection: close', async () => {
    const res = await raw(
      app,
      'POST /upload HTTP/1.1\nHost: localhost\nContent-Type: application/octet-stream\nContent-Length: 2000000\n\nabc',
    )
    expectProblem(res, 413, 'AEGIS_ERR_BODY_TOO_LARGE')
    expect(res.headers.connection).toBe('close')
  })

  it('stops a chunked body that grows past maxBodyBytes with 413', async () => {
    const result = await new Promise<{
      status: number
      headers: Record<string, string | string[] | undefined>
      body: string
    }>((resolve, reject) => {
      const req = request(
        `${app.url}/upload`,
        { method: 'POST', headers: { 'content-type': 'application/octet-stream' } },
        (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (body += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
        },
      )
      req.on('error', reject)
      const chunk = Buffer.alloc(64 * 1024, 97)
      let sent = 0
      const pump = (): void => {
        while (sent < 3 * 1024 * 1024) {
          sent += chunk.length
          if (!req.write(chunk)) return void req.once('drain', pump)
        }
        req.end()
      }
      pump()
    })
    expect(result.status).toBe(413)
    expect(result.headers.connection).toBe('close')
    expect(JSON.parse(result.body)).toMatchObject({ code: 'AEGIS_ERR_BODY_TOO_LARGE' })
  })

  it('lets a chunked body under the limit through, intact', async () => {
    const res = await fetch(`${app.url}/upload`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(10_000))
          c.close()
        },
      }),
      duplex: 'half',
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ bytes: 100_000 })
  })

  it.each([
    '/static/../../etc/passwd',
    '/static/%2e%2e/%2e%2e/etc/passwd',
    '/static/%252e%252e/etc/passwd',
    '/static/..%5c..%5cwindows',
    '/static/..\\..\\windows',
    '/static/..;/admin',
    '/static/%c0%ae%c0%ae/etc/passwd',
  ])('refuses the traversal %s with 400', async (path) => {
    const res = await raw(app, `GET ${path} HTTP/1.1\nHost: localhost\n\n`)
    // Fastify's router refuses undecodable URLs (overlong UTF-8) itself, before any hook.
    if (app.name === 'fastify' && !res.headers['content-type']?.startsWith('application/problem+json'))
      expect(res.status).toBe(400)
    else expectProblem(res, 400, 'AEGIS_ERR_PATH_TRAVERSAL')
  })

  it('refuses two Host headers and invalid Host values with 400', async () => {
    expectProblem(
      await raw(app, 'GET / HTTP/1.1\nHost: a.example\nHost: b.example\n\n'),
      400,
      'AEGIS_ERR_BAD_HOST',
    )
    expectProblem(await raw(app, 'GET / HTTP/1.1\nHost: exa/mple.com\n\n'), 400, 'AEGIS_ERR_BAD_HOST')
    expectProblem(await raw(app, 'GET / HTTP/1.1\nHost: example.com:99999\n\n'), 400, 'AEGIS_ERR_BAD_HOST')
  })

  it('refuses a Host naming another authority than an absolute-form target (issue 14, finding 7)', async () => {
    // RFC 9112 §3.2.2: the target's authority replaces Host; the app would read Host.
    const mismatch = await raw(app, 'GET http://good.example/host HTTP/1.1\nHost: evil.example\n\n')
    const body = expectProblem(mismatch, 400, 'AEGIS_ERR_BAD_HOST')
    expect(String(body.detail)).toMatch(/same host and port/)
    expect(mismatch.body).not.toContain('evil.example')
    expectProblem(
      await raw(app, 'GET http://good.example/host HTTP/1.1\nHost: good.example:8080\n\n'),
      400,
      'AEGIS_ERR_BAD_HOST',
    )
    // A Host that is itself invalid, behind an absolute-form target, is no better.
    expectProblem(
      await raw(app, 'GET http://good.example/host HTTP/1.1\nHost: good.example/x?y\n\n'),
      400,
      'AEGIS_ERR_BAD_HOST',
    )
    // The same authority, however spelled (case, trailing dot, the scheme's default port), is fine.
    for (const [target, host] of [
      ['http://good.example/host', 'good.example'],
      ['http://GOOD.example./host', 'good.example:80'],
      ['https://good.example/host', 'good.example:443'],
    ] as const) {
      const ok = await raw(app, `GET ${target} HTTP/1.1\nHost: ${host}\n\n`)
      expect(ok.status, `${target} + Host: ${host}`).toBe(200)
      expect((JSON.parse(ok.body) as { host: string }).host.toLowerCase()).toMatch(
        /^good\.example\.?(:\d+)?$/,
      )
    }
  })

  it('refuses invalid Host values (path, query, userinfo, spaces), user info in the target, and a missing Host', async () => {
    for (const host of [
      'evil.example/x?y',
      'a@b',
      'user:pass@good.example',
      'evil .example',
      'good.example?x',
    ])
      expectProblem(await raw(app, `GET /host HTTP/1.1\nHost: ${host}\n\n`), 400, 'AEGIS_ERR_BAD_HOST')
    expectProblem(
      await raw(app, 'GET http://a@good.example/host HTTP/1.1\nHost: good.example\n\n'),
      400,
      'AEGIS_ERR_BAD_HOST',
    )
    // Node answers a missing Host on HTTP/1.1 itself (requireHostHeader), before any middleware.
    expect((await raw(app, 'GET http://good.example/host HTTP/1.1\n\n')).status).toBe(400)
  })

  it('refuses Transfer-Encoding on HTTP/1.0 and codings other than a final chunked', async () => {
    const r10 = await raw(
      app,
      'POST /upload HTTP/1.0\nHost: localhost\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n',
    )
    expect(r10.status).toBe(400)
    const gz = await raw(
      app,
      'POST /upload HTTP/1.1\nHost: localhost\nTransfer-Encoding: gzip, chunked\n\n3\nabc\n0\n\n',
    )
    expect(gz.status).toBe(400)
  })

  it('refuses Content-Length with Transfer-Encoding, and duplicate Content-Length', async () => {
    const both = await raw(
      app,
      'POST /upload HTTP/1.1\nHost: localhost\nContent-Length: 3\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n',
    )
    expect(both.status).toBe(400)
    const dup = await raw(
      app,
      'POST /upload HTTP/1.1\nHost: localhost\nContent-Length: 3\nContent-Length: 3\n\nabc',
    )
    expect(dup.status).toBe(400)
  })

  it('answers more than 100 headers, or a header value over 8 KiB, with 431', async () => {
    const many = Array.from({ length: 101 }, (_, i) => `X-H${i}: v`).join('\n')
    expectProblem(
      await raw(app, `GET / HTTP/1.1\nHost: localhost\n${many}\n\n`),
      431,
      'AEGIS_ERR_HEADERS_TOO_LARGE',
    )
    expectProblem(
      await raw(app, `GET / HTTP/1.1\nHost: localhost\nX-Big: ${'a'.repeat(8 * 1024 + 1)}\n\n`),
      431,
      'AEGIS_ERR_HEADERS_TOO_LARGE',
    )
    expect(
      (await raw(app, `GET / HTTP/1.1\nHost: localhost\nX-Big: ${'a'.repeat(8 * 1024)}\n\n`)).status,
    ).toBe(200)
  })

  it('validates a route body with zod: 400 with the issues, parsed values on success', async () => {
    const bad = await fetch(`${app.url}/people`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: '', extra: 1 }),
    })
    const body = expectProblem(
      { status: bad.status, headers: Object.fromEntries(bad.headers), body: await bad.text() },
      400,
      'AEGIS_ERR_VALIDATION',
    )
    expect(body.errors).toEqual(
      expect.arrayContaining([expect.objectContaining({ in: 'body', path: 'name' })]),
    )
    const good = await fetch(`${app.url}/people`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Ada', age: '36' }),
    })
    expect(good.status).toBe(201)
    expect(await good.json()).toEqual({ name: 'Ada', age: 36 })
  })

  it('validates a query with zod', async () => {
    expectProblem(await get(app, '/items?limit=500'), 400, 'AEGIS_ERR_VALIDATION')
    const ok = await get(app, '/items?limit=5')
    expect(ok.status).toBe(200)
    expect(JSON.parse(ok.body)).toEqual({ limit: 5 })
  })

  it('serves Prometheus metrics with route templates, not raw paths', async () => {
    for (let i = 0; i < 5; i++) await get(app, `/users/${1000 + i}`)
    for (let i = 0; i < 50; i++) await get(app, `/random-${Math.random().toString(36).slice(2)}`)
    const res = await get(app, '/metrics')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(res.body).toMatch(
      /aegis_http_requests_total\{method="GET",route="\/users\/:id",status_class="2xx"\} \d+/,
    )
    expect(res.body).toMatch(/aegis_rejections_total\{reason="traversal"\} \d+/)
    expect(res.body).toMatch(
      /aegis_http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/users\/:id",status_class="2xx"\} \d+/,
    )
    expect(res.body).not.toMatch(/random-/)
    // Every sample line must parse as `name{labels} value`.
    for (const line of res.body.split('\n')) {
      if (line === '' || line.startsWith('#')) continue
      expect(line).toMatch(
        /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+-]+|NaN|\+Inf$/,
      )
    }
  })
})

describe.each(adapters)("%s with validator.allowedHosts = ['good.example']", (_name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make({ validator: { allowedHosts: ['good.example'] } })
  })
  afterAll(() => app.close())

  it('an absolute-form target cannot smuggle another Host past the allowlist (issue 14, finding 7)', async () => {
    // The password-reset poisoning of the issue: the target names an allowed host, Host the attacker's.
    const poisoned = await raw(app, 'GET http://good.example/host HTTP/1.1\nHost: evil.example\n\n')
    expectProblem(poisoned, 400, 'AEGIS_ERR_BAD_HOST')
    expect(poisoned.body).not.toContain('evil.example')
    // And the other way round: an allowed Host does not let a foreign authority through.
    expectProblem(
      await raw(app, 'GET http://evil.example/host HTTP/1.1\nHost: good.example\n\n'),
      400,
      'AEGIS_ERR_BAD_HOST',
    )
    // Both naming the foreign host: 421, as with an origin-form request.
    expectProblem(
      await raw(app, 'GET http://evil.example/host HTTP/1.1\nHost: evil.example\n\n'),
      421,
      'AEGIS_ERR_HOST_NOT_ALLOWED',
    )
    expectProblem(
      await raw(app, 'GET /host HTTP/1.1\nHost: evil.example\n\n'),
      421,
      'AEGIS_ERR_HOST_NOT_ALLOWED',
    )
    // What is admitted, the app reads as the allowed host.
    for (const head of [
      'GET /host HTTP/1.1\nHost: good.example\n\n',
      'GET http://good.example/host HTTP/1.1\nHost: good.example\n\n',
    ]) {
      const ok = await raw(app, head)
      expect(ok.status).toBe(200)
      expect(JSON.parse(ok.body)).toEqual({ host: 'good.example' })
    }
  })
})
