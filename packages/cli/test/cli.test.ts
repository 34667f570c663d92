/**
 * The real `aegis` binary (packages/cli/dist/bin.js, from `pnpm build`) run as a
 * child process, against real servers on loopback.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  BIN,
  ROOT,
  complete,
  get,
  killChildren,
  listening,
  logLines,
  run,
  startUpstream,
  within,
} from './helpers.js'

let dir: string
let upstream: Awaited<ReturnType<typeof startUpstream>>
let upstreamUrl: string

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run 'pnpm build' first`)
  dir = await mkdtemp(join(tmpdir(), 'aegis-cli-'))
  upstream = await startUpstream()
  upstreamUrl = upstream.url
})

afterEach(killChildren)

afterAll(async () => {
  await upstream.close()
  await rm(dir, { recursive: true, force: true })
})

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, text)
  return path
}

describe('aegis validate', () => {
  it('exits 0 with a one-line summary for a good file', async () => {
    const path = await file(
      'good.yaml',
      `limiter:\n  points: 10\n  duration: 60\nproxy:\n  - prefix: /api\n    upstreams: [${upstreamUrl}, ${upstreamUrl}]\n`,
    )
    const { code, stdout, stderr } = await complete(['validate', path])
    expect(stderr).toBe('')
    expect(code).toBe(0)
    expect(stdout).toMatch(
      new RegExp(`^${path}: valid \\(1 proxy route, 2 upstreams; limiter, .*; sha256 [0-9a-f]{12}\\)\\n$`),
    )
  })

  it('exits 1 with every error as file:line:column', async () => {
    const path = await file(
      'bad.yaml',
      'limiter:\n  points: ten\n  nope: true\nproxy:\n  - prefix: /a\n    upstreams: [http://h:1]\n  - prefix: /b\n    upstreams:\n      - ftp://h:2\n',
    )
    const { code, stdout, stderr } = await complete(['validate', path])
    expect(code).toBe(1)
    expect(stdout).toBe('')
    const lines = stderr.trim().split('\n')
    expect(lines).toEqual([
      expect.stringMatching(new RegExp(`^${path}:2:11 limiter\\.points: .*expected number`)),
      `${path}:3:3 limiter.nope: unknown option`,
      expect.stringMatching(new RegExp(`^${path}:9:9 proxy\\[1\\]\\.upstreams\\[0\\]: .*ftp`)),
      `${path}: 3 errors`,
    ])
  })

  it('reports YAML and JSON syntax errors at their position', async () => {
    const yaml = await file('syntax.yaml', 'limiter:\n  points: 1\n  points: 2\n')
    const y = await complete(['validate', yaml])
    expect(y.code).toBe(1)
    expect(y.stderr).toMatch(new RegExp(`^${yaml}:3:3 YAML: Map keys must be unique\\n`))
    const json = await file('syntax.json', '{\n  "limiter": { "points": 1, }\n}\n')
    const j = await complete(['validate', json])
    expect(j.code).toBe(1)
    expect(j.stderr).toMatch(new RegExp(`^${json}:2:29 JSON: expected a string key`))
    const good = await file('good.json', `{ "proxy": [{ "prefix": "/x", "upstreams": ["${upstreamUrl}"] }] }`)
    expect((await complete(['validate', good])).code).toBe(0)
  })

  it('substitutes ${NAME} from the environment, and names an unset one', async () => {
    const path = await file('env.yaml', 'proxy:\n  - prefix: /a\n    upstreams:\n      - ${UPSTREAM}\n')
    expect((await complete(['validate', path], { UPSTREAM: upstreamUrl })).code).toBe(0)
    const unset = await complete(['validate', path])
    expect(unset.code).toBe(1)
    expect(unset.stderr).toContain(
      `${path}:4:9 proxy[0].upstreams[0]: environment variable UPSTREAM is not set`,
    )
  })

  it('catches what only a built instance checks (two limiter policies with one name)', async () => {
    const path = await file(
      'dup.yaml',
      'limiter:\n  routes:\n    /a: { name: same, points: 1, duration: 1 }\n    /b: { name: same, points: 1, duration: 1 }\n',
    )
    const { code, stderr } = await complete(['validate', path])
    expect(code).toBe(1)
    expect(stderr).toMatch(/limiter\.routes: two policies are named "same"/)
  })

  it('exits 1 for a missing file and 2 for a usage error; --help and --version exit 0', async () => {
    const missing = await complete(['validate', join(dir, 'nope.yaml')])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read the file \(ENOENT\)/)
    const usage = await complete(['validate'])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toMatch(/validate takes one FILE/)
    expect((await complete(['frobnicate'])).code).toBe(2)
    expect((await complete(['serve', '--port', 'x', 'f.yaml'])).stderr).toMatch(/--port expects/)
    const help = await complete(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: aegis <command>/)
    expect(help.stdout).toMatch(/serve FILE/)
    expect((await complete(['--version'])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/)
  })
})

describe('the example and the docs', () => {
  it('examples/aegis-serve/aegis.yaml is valid, and is the full example of docs/operations.md', async () => {
    const example = join(ROOT, 'examples/aegis-serve/aegis.yaml')
    // Its secrets come from the environment: without them it names them.
    const unset = await complete(['validate', example])
    expect(unset.code).toBe(1)
    expect(unset.stderr).toMatch(/AEGIS_ADMIN_TOKEN/)
    const secrets = { AEGIS_ADMIN_TOKEN: 'a'.repeat(64), AEGIS_AUDIT_SECRET: 'b'.repeat(64) }
    const { code, stdout } = await complete(['validate', example], secrets)
    expect(code).toBe(0)
    expect(stdout).toMatch(/valid \(2 proxy routes, 3 upstreams;.*admin API on 127\.0\.0\.1:9901/)
    // A check writes nothing: the audit trail's SQLite file is not created.
    expect(existsSync(join(ROOT, 'audit.db'))).toBe(false)
    const docs = await readFile(join(ROOT, 'docs/operations.md'), 'utf8')
    const section = docs.slice(docs.indexOf('### Full example'))
    const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1]
    expect(block).toBe(await readFile(example, 'utf8'))
  })
})

describe('aegis serve', () => {
  it('proxies the routes of the file, answers 404 problem+json elsewhere, and exits 0 on SIGTERM', async () => {
    const path = await file(
      'serve.yaml',
      'limiter:\n  points: 50\n  duration: 60\nproxy:\n  - prefix: /api\n    upstreams:\n      - ${UPSTREAM}\n',
    )
    const child = run(['serve', path, '--port', '0'], { UPSTREAM: upstreamUrl })
    const url = await listening(child)
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)

    const proxied = await get(`${url}/api/things?x=1`)
    expect(proxied.status).toBe(200)
    expect(JSON.parse(proxied.body)).toEqual({ upstream: true, method: 'GET', url: '/things?x=1' })
    expect(proxied.headers['x-content-type-options']).toBe('nosniff')
    expect(proxied.headers.ratelimit).toMatch(/"default";r=49/)

    const unknown = await get(`${url}/elsewhere`)
    expect(unknown.status).toBe(404)
    expect(unknown.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(JSON.parse(unknown.body)).toMatchObject({ status: 404, code: 'AEGIS_ERR_NOT_FOUND' })

    const started = Date.now()
    child.proc.kill('SIGTERM')
    const { code } = await within(child.exited, 5_000, 'no exit within 5 s of SIGTERM')
    expect(code).toBe(0)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(logLines(child).map((l) => l.msg)).toEqual(expect.arrayContaining(['stopped']))
    expect(child.stderr).toBe('')
  })

  it('lets a request in flight finish on SIGTERM', async () => {
    const path = await file('drain.yaml', `proxy:\n  - prefix: /\n    upstreams: [${upstreamUrl}]\n`)
    const child = run(['serve', path, '--port', '0', '--host', '127.0.0.1'])
    const url = await listening(child)
    const slow = get(`${url}/slow`)
    await new Promise((r) => setTimeout(r, 100))
    child.proc.kill('SIGTERM')
    const answer = await slow
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body)).toMatchObject({ url: '/slow' })
    expect((await within(child.exited, 5_000, 'no exit after the drain')).code).toBe(0)
  })

  it('applies a changed file without a restart (a rename save, SIGHUP), and keeps the old one when the new is broken', async () => {
    const text = (points: number) =>
      `limiter:\n  points: ${points}\n  duration: 60\nproxy:\n  - prefix: /api\n    upstreams: [${upstreamUrl}]\n`
    const path = await file('reload.yaml', text(50))
    const child = run(['serve', path, '--port', '0'])
    const url = await listening(child)
    expect((await get(`${url}/api/a`)).headers.ratelimit).toMatch(/"default";r=49/)
    const until = async (what: string, ok: () => Promise<boolean>) => {
      const deadline = Date.now() + 5_000
      while (!(await ok())) {
        if (Date.now() > deadline) throw new Error(`${what}: ${child.stdout}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    // An editor's save: a new file renamed over the old one.
    await writeFile(`${path}.tmp`, text(80))
    await rename(`${path}.tmp`, path)
    await until('the new limit applies', async () =>
      /"default";r=7\d/.test(String((await get(`${url}/api/b`)).headers.ratelimit)),
    )
    // A broken save: refused, logged; the limit in force stays.
    await writeFile(path, 'limiter:\n  points: -5\n')
    await until('the broken file is refused', () =>
      Promise.resolve(logLines(child).some((l) => /refused/.test(String(l.msg)))),
    )
    expect(String((await get(`${url}/api/c`)).headers.ratelimit)).toMatch(/"default";r=7\d/)
    // SIGHUP reads the file again: fixed by hand meanwhile.
    await writeFile(path, text(120))
    child.proc.kill('SIGHUP')
    await until('SIGHUP applies the file', async () =>
      /"default";r=1[01]\d/.test(String((await get(`${url}/api/d`)).headers.ratelimit)),
    )
    child.proc.kill('SIGTERM')
    expect((await within(child.exited, 5_000, 'no exit after SIGTERM')).code).toBe(0)
  })

  it('refuses a bad file with its errors, and a port in use, with exit code 1', async () => {
    const bad = await file('serve-bad.yaml', 'proxy:\n  - prefix: api\n    upstreams: [http://h:1]\n')
    const refused = await complete(['serve', bad, '--port', '0'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(new RegExp(`^${bad}:2:13 proxy\\[0\\]\\.prefix: expected '/'`))

    const good = await file('serve-port.yaml', `proxy:\n  - prefix: /\n    upstreams: [${upstreamUrl}]\n`)
    const port = new URL(upstreamUrl).port
    const busy = await complete(['serve', good, '--port', port])
    expect(busy.code).toBe(1)
    expect(logLines(busy).find((l) => l.level === 50)?.msg).toMatch(
      /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/,
    )
  })
})

describe('aegis serve --demo', () => {
  it('starts a sample upstream and a gateway in front of it, prints curl commands, stops on SIGINT', async () => {
    const child = run(['serve', '--demo', '--port', '0'])
    const url = await listening(child)
    const hello = await get(`${url}/api/hello`)
    expect(hello.status).toBe(200)
    expect(JSON.parse(hello.body)).toMatchObject({ message: 'hello from the demo upstream' })
    expect((await get(`${url}/api/users/2`)).body).toBe('{"id":2,"name":"Grace Hopper"}')
    expect((await get(`${url}/nowhere`)).status).toBe(404)
    const echoes: number[] = []
    for (let i = 0; i < 4; i++)
      echoes.push((await get(`${url}/api/echo`, { method: 'POST', body: 'hi' })).status)
    expect(echoes).toEqual([200, 200, 200, 429])
    expect((await get(`${url}/metrics`)).body).toMatch(/aegis_http_requests_total/)
    expect(child.stdout).toContain(`curl -i ${url}/api/hello`)

    child.proc.kill('SIGINT')
    expect((await within(child.exited, 5_000, 'no exit within 5 s of SIGINT')).code).toBe(0)
  })
})
