/**
 * What the ghost cache must never do, on every adapter's gateway: serve one client's
 * answer to another (credentials, cookies, personal or uncacheable answers, the wrong
 * language), or let a request plant an answer another client then gets (web cache
 * poisoning by unkeyed headers, a fat GET, parameter cloaking, another Host). Each test
 * learns with the upstream up, kills it, and looks at what the ghost answers.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { ProxyRouteOptions } from '@aegis/core'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'
import { hit, type Reply } from '../helpers/hit.js'

/**
 * An upstream that echoes what could make an answer personal or poisoned: the
 * credential, the cookie, the language, the forwarded host and the URL. `?cc=` sets its
 * Cache-Control, `?cookie=1` a Set-Cookie, `?vary=` its Vary.
 */
const echoing = (): Promise<Upstream> =>
  startUpstream('echo', (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    const cc = url.searchParams.get('cc')
    if (cc !== null) headers['cache-control'] = cc
    if (url.searchParams.get('cookie') === '1') headers['set-cookie'] = 'session=s3cret'
    const vary = url.searchParams.get('vary')
    if (vary !== null) headers.vary = vary
    res.writeHead(200, headers)
    res.end(
      JSON.stringify({
        url: req.url,
        user: req.headers.authorization ?? null,
        cookie: req.headers.cookie ?? null,
        lang: req.headers['accept-language'] ?? null,
        forwardedHost: req.headers['x-forwarded-host'] ?? null,
        original: req.headers['x-original-url'] ?? null,
      }),
    )
  })

const ghostly = (r: Reply): boolean => r.headers['x-aegis-ghost'] === '1'
const json = (r: Reply): Record<string, unknown> => JSON.parse(r.body) as Record<string, unknown>

describe.each(gateways)('the ghost cache keeps answers apart on %s', (_name, createGateway) => {
  let app: GatewayApp | undefined
  let upstream: Upstream | undefined
  afterEach(async () => {
    await app?.close()
    await upstream?.close()
    app = upstream = undefined
  })
  const start = async (route: Partial<ProxyRouteOptions> = {}): Promise<GatewayApp> => {
    upstream = await echoing()
    app = await createGateway([{ prefix: '/svc', upstreams: [upstream.url], retry: false, ...route }], {
      ghost: true,
    })
    return app
  }
  const kill = (): Promise<void> => upstream!.close()

  it('never learns an answer to a request with Authorization or a Cookie', async () => {
    const app = await start()
    expect(json(await hit(app.port, '/svc/me', { headers: { authorization: 'Bearer alice' } })).user).toBe(
      'Bearer alice',
    )
    await hit(app.port, '/svc/basket', { headers: { cookie: 'sid=alice' } })
    await kill()
    for (const headers of [{}, { authorization: 'Bearer alice' }, { authorization: 'Bearer mallory' }])
      expect((await hit(app.port, '/svc/me', { headers })).status).toBe(502)
    expect((await hit(app.port, '/svc/basket')).status).toBe(502)
    expect((await hit(app.port, '/svc/basket', { headers: { cookie: 'sid=alice' } })).status).toBe(502)
  })

  it('with credentials: true, serves a credentialed answer to the same credential only', async () => {
    const app = await start({ ghost: { credentials: true } })
    await hit(app.port, '/svc/me', { headers: { authorization: 'Bearer alice' } })
    await hit(app.port, '/svc/me', { headers: { cookie: 'sid=bob' } })
    await kill()
    const alice = await hit(app.port, '/svc/me', { headers: { authorization: 'Bearer alice' } })
    expect([ghostly(alice), json(alice).user]).toEqual([true, 'Bearer alice'])
    const bob = await hit(app.port, '/svc/me', { headers: { cookie: 'sid=bob' } })
    expect([ghostly(bob), json(bob).cookie]).toEqual([true, 'sid=bob'])
    for (const headers of [{}, { authorization: 'Bearer mallory' }, { cookie: 'sid=mallory' }])
      expect((await hit(app.port, '/svc/me', { headers })).status).toBe(502)
  })

  it('never stores Set-Cookie, private or no-store answers', async () => {
    const app = await start()
    const paths = [
      '/svc/a?cookie=1',
      '/svc/b?cc=private',
      '/svc/c?cc=no-store',
      '/svc/d?cc=private%2C%20max-age%3D60',
    ]
    for (const path of paths) expect((await hit(app.port, path)).status).toBe(200)
    await kill()
    for (const path of paths) expect((await hit(app.port, path)).status).toBe(502)
  })

  it('keeps the languages of a Vary: Accept-Language answer apart', async () => {
    const app = await start()
    const path = '/svc/hello?vary=Accept-Language'
    for (const lang of ['fr', 'en']) await hit(app.port, path, { headers: { 'accept-language': lang } })
    await kill()
    for (const lang of ['fr', 'en']) {
      const r = await hit(app.port, path, { headers: { 'accept-language': lang } })
      expect([ghostly(r), json(r).lang]).toEqual([true, lang])
    }
    expect((await hit(app.port, path, { headers: { 'accept-language': 'de' } })).status).toBe(502)
    expect((await hit(app.port, path)).status).toBe(502)
  })

  it('never stores Vary: *', async () => {
    const app = await start()
    await hit(app.port, '/svc/any?vary=*')
    await kill()
    expect((await hit(app.port, '/svc/any?vary=*')).status).toBe(502)
  })

  it('lets no unkeyed input change what another client gets', async () => {
    const app = await start()
    const victim = json(await hit(app.port, '/svc/page?a=1'))
    // The attacks, each with the upstream up: every one would replace the entry if it were learned.
    await hit(app.port, '/svc/page?a=1', { headers: { 'x-forwarded-host': 'evil.example' } })
    await hit(app.port, '/svc/page?a=1', { headers: { 'x-original-url': '/admin' } })
    await hit(app.port, '/svc/page?a=1', { headers: { 'x-rewrite-url': '/admin' } })
    await hit(app.port, '/svc/page?a=1', {
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '7' },
      body: 'a=evil1',
    })
    // Parameter cloaking: a backend splitting on `;` sees a=1 and b=evil; the key keeps them one parameter.
    await hit(app.port, '/svc/page?a=1;b=evil')
    // Another Host: its own key.
    await hit(app.port, '/svc/page?a=1', { headers: { host: 'evil.example' } })
    await kill()
    const got = await hit(app.port, '/svc/page?a=1')
    expect([ghostly(got), json(got)]).toEqual([true, victim])
    // The cloaked URL has an entry of its own, never the victim's.
    const cloaked = await hit(app.port, '/svc/page?a=1;b=evil')
    expect(json(cloaked).url).toBe('/page?a=1;b=evil')
  })
})
