/**
 * Replays nginx's Host-header validation cases against Aegis on Express, Fastify
 * and Koa, over real sockets.
 *
 * Corpus: test/corpora/data/nginx-host-header-cases/host-cases.jsonl — the input and
 * verdict pairs of nginx-tests `http_host.t` (https://github.com/nginx/nginx-tests,
 * commit 76bb761c). Licence: BSD-2-Clause, Copyright (C) 2008-2011 Maxim Dounin;
 * the text is in the folder's LICENSE file.
 *
 * Requests are HTTP/1.0, as in nginx-tests: `GET / HTTP/1.0` with `Host: <input>`,
 * or `GET http://<input>/ HTTP/1.0` (absolute form). nginx-tests sends the absolute
 * form with `Host: localhost` and ignores it, as RFC 9112 §3.2.2 says a server does;
 * Aegis refuses a Host naming another authority than the target (frameworks read the
 * Host field, not the target: see docs/configuration.md#validator), so here the
 * absolute form carries `Host: <input>`, as RFC 9112 §3.2 requires of a client, and
 * the mismatch has its own block below.
 * A `400` row must end in 400, whoever produced it: Aegis (problem+json) or
 * Node's parser, which refuses the LF and 0x02 rows before any middleware runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { authorityPort, normalizeHost } from '@aegis/core'
import { adapters, type TestApp } from '../conformance/apps.js'
import { exchange, header, readCorpus } from './support.js'

interface HostCase {
  via: 'Host header' | 'absolute-form request target'
  input: string
  nginx_expects: string
  nginx_test_name: string
}

const cases = readCorpus('nginx-host-header-cases/host-cases.jsonl')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => JSON.parse(l) as HostCase)

const invalid = cases.filter((c) => c.nginx_expects === '400')
const valid = cases.filter((c) => c.nginx_expects !== '400')

const ALLOWED = 'abcd-ef.g02.xyz'
const allowedNormalized = normalizeHost(ALLOWED)
/** Compared on the normalised form, so `abcd-ef.g02.xyz.:88` matches the entry. */
const admittedByAllowlist = (c: HostCase): boolean => normalizeHost(c.nginx_expects) === allowedNormalized

/**
 * Rows whose absolute-form target the framework cannot parse, so its answer is not
 * Aegis' verdict. `before`: the framework answers before Aegis runs; `after`: Aegis
 * admits the request (nginx accepts the host) and the framework then fails on it.
 *
 * - Express 5's router takes the path from `url.parse()`, which throws on these
 *   targets; it then skips every layer, Aegis included, and answers 404 itself.
 *   No handler runs, but the 400 rows get a 404 without Aegis' headers.
 * - Fastify's router refuses the IPvFuture target (FST_ERR_BAD_URL, 400) before
 *   any hook.
 * - Koa: the Aegis middleware admits the IPvFuture target, then `ctx.path`
 *   (url.parse again) throws: 500. With the allowlist, Aegis' 421 comes first.
 */
const FRAMEWORK_FIRST: Record<string, Record<string, { status: number; stage: 'before' | 'after' }>> = {
  express: Object.fromEntries(
    [
      'ipv6 literal w/ ending dot w/o port(absolute request)',
      'ipv6 literal w/ ending dot w/port (absolute request)',
      'ipv6 literal w/ leading alnum (absolute request)',
      'ipv6 literal missing bracket (absolute request)',
      'IPvFuture all symbols (absolute request)',
    ].map((name) => [name, { status: 404, stage: 'before' as const }]),
  ),
  fastify: { 'IPvFuture all symbols (absolute request)': { status: 400, stage: 'before' } },
  koa: { 'IPvFuture all symbols (absolute request)': { status: 500, stage: 'after' } },
}

const frameworkFirst = (app: TestApp, c: HostCase, aegisAdmits: boolean): number | undefined => {
  const quirk = FRAMEWORK_FIRST[app.name]?.[c.nginx_test_name]
  return quirk !== undefined && (quirk.stage === 'before' || aegisAdmits) ? quirk.status : undefined
}

const quirkNote = (name: string, c: HostCase): string => {
  const quirk = FRAMEWORK_FIRST[name]?.[c.nginx_test_name]
  if (quirk === undefined) return ''
  return quirk.stage === 'before'
    ? ` (${name} cannot parse the target and answers ${quirk.status} before Aegis runs)`
    : ` (${name} cannot parse the target: ${quirk.status} once Aegis admits it)`
}

const request = (c: HostCase, hostHeader = c.input): string =>
  c.via === 'Host header'
    ? `GET / HTTP/1.0\r\nHost: ${c.input}\r\n\r\n`
    : `GET http://${c.input}/ HTTP/1.0\r\nHost: ${hostHeader}\r\n\r\n`

/** Whether a target authority and a Host value name one host and port (http: port 80 by default). */
const sameAuthority = (target: string, host: string): boolean => {
  const name = normalizeHost(target)
  return (
    name !== undefined &&
    name === normalizeHost(host) &&
    authorityPort(target, 80) === authorityPort(host, 80)
  )
}

const send = async (
  app: TestApp,
  bytes: string,
): Promise<{ status: number; contentType: string | undefined }> => {
  const res = await exchange(app.port, bytes)
  const first = res.responses[0]
  return { status: first?.status ?? 0, contentType: first && header(first, 'content-type') }
}

it('the corpus holds the 60 assertions of http_host.t', () => {
  expect(cases).toHaveLength(60)
  expect(invalid.length + valid.length).toBe(60)
  expect(valid.filter(admittedByAllowlist).length).toBeGreaterThan(0)
})

// normalizeHost alone, no sockets: it must derive exactly the host nginx derives.
describe('normalizeHost agrees with nginx', () => {
  it.each(valid.map((c) => [c.nginx_test_name, c] as const))('%s', (_name, c) => {
    expect(normalizeHost(c.input)).toBe(c.nginx_expects)
  })
  it.each(invalid.map((c) => [c.nginx_test_name, c] as const))('%s is invalid', (_name, c) => {
    expect(normalizeHost(c.input)).toBeUndefined()
  })
})

describe.each(adapters)('%s with aegis() defaults', (name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make()
  })
  afterAll(() => app.close())

  it.each(invalid.map((c) => [c.nginx_test_name + quirkNote(name, c), c] as const))(
    '400: %s',
    async (_n, c) => {
      const res = await send(app, request(c))
      const quirk = frameworkFirst(app, c, false)
      if (quirk !== undefined) return void expect(res.status).toBe(quirk)
      expect(res.status).toBe(400)
      // A body, when there is one, is Aegis' problem+json or the framework's parser-error JSON.
      if (res.contentType !== undefined) expect(res.contentType).toMatch(/^application\/(problem\+)?json/)
    },
  )

  it.each(valid.map((c) => [c.nginx_test_name + quirkNote(name, c), c] as const))(
    'accepted: %s',
    async (_n, c) => {
      const res = await send(app, request(c))
      const quirk = frameworkFirst(app, c, true)
      if (quirk !== undefined) return void expect(res.status).toBe(quirk)
      expect(res.status).toBeGreaterThanOrEqual(200)
      expect(res.status).toBeLessThan(300)
    },
  )
})

describe.each(adapters)(`%s with validator.allowedHosts = ['${ALLOWED}']`, (name, make) => {
  let app: TestApp
  beforeAll(async () => {
    app = await make({ validator: { allowedHosts: [ALLOWED] } })
  })
  afterAll(() => app.close())

  const expectVerdict = (c: HostCase, status: number, contentType: string | undefined): void => {
    const admitted = admittedByAllowlist(c)
    const quirk = frameworkFirst(app, c, admitted)
    if (quirk !== undefined) expect(status).toBe(quirk)
    else if (admitted) {
      expect(status).toBeGreaterThanOrEqual(200)
      expect(status).toBeLessThan(300)
    } else {
      expect(status).toBe(421)
      expect(contentType).toMatch(/^application\/problem\+json/)
    }
  }

  it.each(valid.map((c) => [c.nginx_test_name + quirkNote(name, c), c] as const))(
    '%s: admitted when it normalises to the entry, else 421',
    async (_n, c) => {
      const res = await send(app, request(c))
      expectVerdict(c, res.status, res.contentType)
    },
  )

  it.each(invalid.map((c) => [c.nginx_test_name + quirkNote(name, c), c] as const))(
    'still 400: %s',
    async (_n, c) => {
      const res = await send(app, request(c))
      expect(res.status).toBe(frameworkFirst(app, c, false) ?? 400)
    },
  )

  // RFC 9112 §3.2.2: the absolute-form authority is what counts; a Host naming another
  // authority (the password-reset poisoning of issue 14) is refused, never admitted.
  const absolute = valid.filter((c) => c.via === 'absolute-form request target')
  it.each(absolute.map((c) => [c.nginx_test_name + quirkNote(name, c), c] as const))(
    `Host: ${ALLOWED} must name the target's authority: %s`,
    async (_n, c) => {
      const res = await send(app, request(c, ALLOWED))
      if (!sameAuthority(c.input, ALLOWED) && frameworkFirst(app, c, false) === undefined) {
        expect(res.status).toBe(400)
        expect(res.contentType).toMatch(/^application\/problem\+json/)
      } else expectVerdict(c, res.status, res.contentType)
    },
  )
})
