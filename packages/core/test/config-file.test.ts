import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  AegisConfigError,
  createAegis,
  formatConfigIssue,
  loadConfigFile,
  loadConfigFileSync,
  parseConfigText,
  type ConfigIssue,
  type ParseConfigOptions,
} from '../src/index.js'
import { checkJson } from '../src/config-file/json.js'
import { substitute } from '../src/config-file/env.js'

function issuesOf(text: string, options: ParseConfigOptions = {}): ConfigIssue[] {
  try {
    parseConfigText(text, { env: {}, ...options })
  } catch (err) {
    if (err instanceof AegisConfigError) return [...err.issues]
    throw err
  }
  throw new Error('expected AegisConfigError')
}

/** `line:column path` of each issue, the shape a reader checks against the text. */
const where = (issues: ConfigIssue[]): string[] => issues.map((i) => `${i.line}:${i.column} ${i.path}`)

describe('parseConfigText: YAML', () => {
  it('returns the options, a SHA-256 of the text and the format', () => {
    const text =
      'limiter:\n  points: 10\n  duration: 60\nproxy:\n  - prefix: /api\n    upstreams: [http://127.0.0.1:9]\n'
    const loaded = parseConfigText(text, { source: 'aegis.yaml' })
    expect(loaded.options).toEqual({
      limiter: { points: 10, duration: 60 },
      proxy: [{ prefix: '/api', upstreams: ['http://127.0.0.1:9'] }],
    })
    expect(loaded.hash).toBe(createHash('sha256').update(text).digest('hex'))
    expect(loaded.format).toBe('yaml')
    expect(loaded.source).toBe('aegis.yaml')
  })

  it('takes an empty file (or only comments) as all defaults', () => {
    expect(parseConfigText('').options).toEqual({})
    expect(parseConfigText('# nothing yet\n').options).toEqual({})
  })

  it('reports YAML syntax errors at the line and column yaml gives', () => {
    // `duration` indented under a scalar: a nested mapping where none can be.
    const bad = issuesOf('limiter:\n  points: 5\n    duration: 3\n', { source: 'a.yaml' })
    expect(bad[0]).toMatchObject({ source: 'a.yaml', line: 2, column: 11 })
    expect(bad[0]?.message).toMatch(/^YAML: /)
    // An unclosed flow sequence, reported where the next key starts.
    expect(where(issuesOf('a: [1, 2\nb: 3\n'))).toEqual(['2:1 '])
    // A duplicated key, at the second one.
    const dup = issuesOf('limiter:\n  points: 1\n  points: 2\n')
    expect(dup).toMatchObject([{ line: 3, column: 3, message: 'YAML: Map keys must be unique' }])
    // Tabs as indentation.
    expect(where(issuesOf('limiter:\n\tpoints: 1\n'))).toEqual(['2:1 '])
  })

  it('never quotes the text in a syntax error (a secret may be on that line)', () => {
    const [issue] = issuesOf('store:\n  redis: "redis://u:hunter2@h:6379" junk\n')
    expect(issue?.line).toBe(2)
    expect(JSON.stringify(issue)).not.toMatch(/hunter2/)
  })

  it('maps schema issues to the node at their path: nested keys, sequences, unknown keys', () => {
    const text = [
      'limiter:', //                     1
      '  points: ten', //                2
      '  nope: 1', //                    3
      'proxy:', //                       4
      '  - prefix: /a', //               5
      '    upstreams: [http://h:1]', //  6
      '  - prefix: /b', //               7
      '    upstreams:', //               8
      '      - http://h:2', //           9
      '      - ftp://h:3', //            10
      '    timeouts:', //                11
      '      connect: -5', //            12
      '',
    ].join('\n')
    const issues = issuesOf(text, { source: 'aegis.yaml' })
    expect(where(issues).sort()).toEqual(
      [
        '2:11 limiter.points',
        '3:3 limiter.nope', // an unknown option: its key
        '10:9 proxy.1.upstreams.1',
        '12:16 proxy.1.timeouts.connect',
      ].sort(),
    )
    const lines = issues.map(formatConfigIssue)
    expect(lines).toContain('aegis.yaml:3:3 limiter.nope: unknown option')
    expect(lines.find((l) => l.startsWith('aegis.yaml:10:9 '))).toMatch(
      /^aegis\.yaml:10:9 proxy\[1\]\.upstreams\[1\]: .*ftp.* \(received "ftp:\/\/h:3"\)$/,
    )
    expect(lines.find((l) => l.startsWith('aegis.yaml:2:11 '))).toMatch(/limiter\.points: .*expected number/)
  })

  it('quotes keys that are no identifier in the shown path, and points at a refused record key', () => {
    const text =
      'limiter:\n  routes:\n    "POST /login":\n      points: 0\n      duration: 60\n    login:\n      points: 1\n      duration: 1\n'
    const issues = issuesOf(text, { source: 'x.yaml' })
    const lines = issues.map(formatConfigIssue)
    expect(lines).toContain(
      'x.yaml:4:15 limiter.routes["POST /login"].points: Too small: expected number to be >=1 (received 0)',
    )
    // `login` is no route spec: the issue is the key, so its position is the key's.
    expect(lines.find((l) => l.startsWith('x.yaml:6:5 limiter.routes.login: '))).toBeDefined()
  })

  it('points at the key of a section left empty, and at the nearest ancestor of a missing option', () => {
    // `limiter:` with nothing after it is null in YAML.
    const [empty] = issuesOf('headers: {}\nlimiter:\n')
    expect(empty).toMatchObject({ line: 2, column: 1, path: 'limiter' })
    expect(empty?.message).toMatch(/has no value/)
    // A route without upstreams or a router: the route itself.
    const [missing] = issuesOf('proxy:\n  - prefix: /a\n')
    expect(missing).toMatchObject({ line: 2, column: 5 })
    expect(missing?.path).toMatch(/^proxy\.0/)
  })

  it('reports a non-object root at 1:1', () => {
    const [issue] = issuesOf('- a\n- b\n')
    expect(issue).toMatchObject({ line: 1, column: 1, path: '' })
  })

  it('says a function-valued option cannot come from a file', () => {
    const [issue] = issuesOf('skip: yes-please\n')
    expect(issue).toMatchObject({ line: 1, column: 7, path: 'skip' })
    expect(issue?.message).toMatch(/config file cannot hold one/)
    const [logger] = issuesOf('logger: pino\n')
    expect(logger?.message).toMatch(/pino-compatible logger.*config file cannot hold one/)
  })

  it('checks accessLog as if the logger were passed in code', () => {
    expect(parseConfigText('accessLog: true\n').options).toEqual({ accessLog: true })
  })

  it('follows anchors and aliases, and refuses an alias bomb', () => {
    const text =
      'proxy:\n  - prefix: /a\n    upstreams: &up [http://h:1]\n  - prefix: /b\n    upstreams: *up\n'
    expect(parseConfigText(text).options.proxy).toHaveLength(2)
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]']
    for (let i = 1; i < 9; i++)
      bomb.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(', ')}]`,
      )
    const [issue] = issuesOf(bomb.join('\n'))
    expect(issue?.message).toMatch(/^YAML: .*alias/i)
  })

  it('redacts secrets in what it reports, as parseOptions does', () => {
    const issues = issuesOf('cors:\n  origin: "redis://user:hunter2@host:6379"\n  maxAge: -1\n')
    expect(JSON.stringify(issues)).not.toMatch(/hunter2/)
  })

  it('is what createAegis takes', async () => {
    const { options } = parseConfigText('limiter:\n  points: 3\n  duration: 60\n')
    const aegis = createAegis(options)
    expect(aegis.config.limiter === false ? 0 : aegis.config.limiter.points).toBe(3)
    await aegis.close()
  })
})

describe('parseConfigText: JSON', () => {
  it('reads JSON, by the source name or the format option', () => {
    const text = '{ "limiter": { "points": 7, "duration": 1 } }'
    expect(parseConfigText(text, { source: 'aegis.json' })).toMatchObject({
      format: 'json',
      options: { limiter: { points: 7 } },
    })
    expect(parseConfigText(text, { format: 'json' }).format).toBe('json')
  })

  it('reports strict JSON syntax errors with line and column, which YAML alone would accept', () => {
    const cases: [string, string, RegExp][] = [
      ['{\n  "limiter": {\n    "points": 5,\n  }\n}', '4:3', /string key/], // trailing comma
      ['{\n  // a comment\n  "a": 1\n}', '2:3', /string key/],
      ['{\n  "a": nope\n}', '2:8', /expected a value/],
      ["{\n  'a': 1\n}", '2:3', /string key/],
      ['{ "a": 1 } x', '1:12', /after the JSON value/],
      ['{ "a": "unterminated', '1:21', /unterminated string/],
      ['{ "a": [1, 2 }', '1:14', /expected ',' or ']'/],
      ['', '1:1', /end of input/],
    ]
    for (const [text, at, message] of cases) {
      const [issue] = issuesOf(text, { source: 'c.json' })
      expect(`${issue?.line}:${issue?.column}`, text).toBe(at)
      expect(issue?.message, text).toMatch(/^JSON: /)
      expect(issue?.message, text).toMatch(message)
    }
  })

  it('maps schema issues to JSON nodes too', () => {
    const text =
      '{\n  "limiter": {\n    "points": "x"\n  },\n  "proxy": [\n    { "prefix": "/a", "upstreams": ["http://h:1"] },\n    { "prefix": "nope", "upstreams": ["http://h:2"] }\n  ]\n}\n'
    expect(where(issuesOf(text, { source: 'd.json' })).sort()).toEqual([
      '3:15 limiter.points',
      '7:17 proxy.1.prefix',
    ])
  })

  it('finds the first error of deep or odd JSON without recursion', () => {
    expect(checkJson('['.repeat(100_000) + ']'.repeat(100_000))).toBeUndefined()
    expect(checkJson('['.repeat(100_000))).toMatchObject({ offset: 100_000 })
    expect(checkJson('{"a":"\\u00e9\\n","b":[true,false,null,-1.5e3,0]}')).toBeUndefined()
    expect(checkJson('{"a":"\\x"}')).toMatchObject({ offset: 6, message: 'bad escape in a string' })
    expect(checkJson('{"a":01}')).toMatchObject({ offset: 6 })
    expect(checkJson('\ufeff{}')).toBeUndefined()
  })
})

describe('parseConfigText: ${NAME} substitution', () => {
  it('replaces references in values from env, with defaults and $${ for a literal', () => {
    const text = [
      'store:',
      '  redis: ${REDIS_URL}',
      'limiter:',
      '  points: ${POINTS}',
      '  duration: ${DURATION:-60}',
      '  name: "${POLICY}-x"',
      '  routes:',
      '    /a:',
      '      points: 1',
      '      duration: 1',
      '      name: "$${literal}"',
      '',
    ].join('\n')
    const env = { REDIS_URL: 'redis://127.0.0.1:6379', POINTS: '25', POLICY: 'main' }
    expect(parseConfigText(text, { env }).options).toEqual({
      store: { redis: 'redis://127.0.0.1:6379' },
      // A plain scalar that is one whole reference takes its YAML type: a number here.
      limiter: {
        points: 25,
        duration: 60,
        name: 'main-x',
        routes: { '/a': { points: 1, duration: 1, name: '${literal}' } },
      },
    })
  })

  it('keeps a quoted reference a string, and substitutes inside sequences', () => {
    const { options } = parseConfigText('limiter:\n  allow: ["${NET}", 10.0.0.0/8]\n  name: "${N}"\n', {
      env: { NET: '192.0.2.0/24', N: '42' },
    })
    expect(options.limiter).toEqual({ allow: ['192.0.2.0/24', '10.0.0.0/8'], name: '42' })
  })

  it('reports every unset variable at its line and column, and a malformed reference', () => {
    const issues = issuesOf('store:\n  redis: ${REDIS_URL}\nlimiter:\n  points: ${POINTS}\n', {
      source: 'e.yaml',
    })
    expect(issues.map(formatConfigIssue)).toEqual([
      'e.yaml:2:10 store.redis: environment variable REDIS_URL is not set',
      'e.yaml:4:11 limiter.points: environment variable POINTS is not set',
    ])
    const [bad] = issuesOf('limiter:\n  name: "${1X}"\n')
    expect(bad).toMatchObject({ line: 2, column: 9 })
    expect(bad?.message).toMatch(/bad variable reference/)
    const [open] = issuesOf('limiter:\n  name: "a${B"\n')
    expect(open?.message).toMatch(/unclosed/)
  })

  it('redacts a value that came from the environment, whatever its key', () => {
    const [issue] = issuesOf('limiter:\n  points: ${POINTS}\n', { env: { POINTS: 'sup3rsecret' } })
    expect(issue).toMatchObject({ line: 2, column: 11, path: 'limiter.points' })
    expect(issue?.received).toBe('[redacted: from the environment]')
    expect(JSON.stringify(issue)).not.toMatch(/sup3rsecret/)
  })

  it('reads process.env by default, and substitutes nothing with env: false', () => {
    process.env.AEGIS_TEST_POINTS = '9'
    try {
      expect(parseConfigText('limiter:\n  points: ${AEGIS_TEST_POINTS}\n').options).toEqual({
        limiter: { points: 9 },
      })
    } finally {
      delete process.env.AEGIS_TEST_POINTS
    }
    expect(parseConfigText('limiter:\n  name: "${X}"\n', { env: false }).options).toEqual({
      limiter: { name: '${X}' },
    })
  })

  it('takes the admin token from the environment, and never shows a short one', () => {
    const text = 'admin:\n  token: ${AEGIS_ADMIN_TOKEN}\n'
    const token = 'f'.repeat(32)
    expect(parseConfigText(text, { env: { AEGIS_ADMIN_TOKEN: token } }).options).toEqual({ admin: { token } })
    const [issue] = issuesOf(text, { env: { AEGIS_ADMIN_TOKEN: 'short-secret' } })
    expect(issue).toMatchObject({ line: 2, column: 10, path: 'admin.token' })
    expect(JSON.stringify(issue)).not.toMatch(/short-secret/)
  })

  it('never substitutes keys', () => {
    expect(substitute('plain', {})).toEqual({ ok: true, value: 'plain', references: 0, whole: false })
    const [issue] = issuesOf('${KEY}: 1\n', { env: { KEY: 'limiter' } })
    expect(issue).toMatchObject({ path: '${KEY}', message: 'unknown option' })
  })
})

describe('loadConfigFile', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-config-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reads YAML and JSON files, the hash changing with the content only', async () => {
    const yaml = join(dir, 'aegis.yaml')
    await writeFile(yaml, 'limiter:\n  points: 4\n')
    const first = await loadConfigFile(yaml)
    expect(first).toMatchObject({ source: yaml, format: 'yaml', options: { limiter: { points: 4 } } })
    await writeFile(yaml, 'limiter:\n  points: 4\n')
    expect((await loadConfigFile(yaml)).hash).toBe(first.hash)
    await writeFile(yaml, 'limiter:\n  points: 5\n')
    expect((await loadConfigFile(yaml)).hash).not.toBe(first.hash)
    const json = join(dir, 'aegis.json')
    await writeFile(json, '{"limiter": {"points": 6}}')
    expect(await loadConfigFile(json)).toMatchObject({ format: 'json', options: { limiter: { points: 6 } } })
    expect(loadConfigFileSync(json)).toEqual(await loadConfigFile(json))
  })

  it('names the file in every issue, and refuses a missing, non-UTF-8 or oversized file', async () => {
    const bad = join(dir, 'bad.yaml')
    await writeFile(bad, 'limiter:\n  points: ten\n')
    await expect(loadConfigFile(bad, { source: 'bad.yaml' })).rejects.toThrow(
      /bad\.yaml:2:11 limiter\.points: .*expected number/,
    )
    await expect(loadConfigFile(join(dir, 'missing.yaml'))).rejects.toMatchObject({
      code: 'AEGIS_ERR_CONFIG',
      issues: [{ message: 'cannot read the file (ENOENT)' }],
    })
    const latin1 = join(dir, 'latin1.yaml')
    await writeFile(latin1, Buffer.from([0x61, 0x3a, 0x20, 0xe9, 0x0a]))
    await expect(loadConfigFile(latin1)).rejects.toThrow(/not valid UTF-8/)
    const big = join(dir, 'big.yaml')
    await writeFile(big, Buffer.alloc(8 * 1024 * 1024 + 1, 0x20))
    await expect(loadConfigFile(big)).rejects.toThrow(/larger than/)
    expect(() => loadConfigFileSync(join(dir, 'missing.yaml'))).toThrow(/cannot read the file \(ENOENT\)/)
    expect(() => loadConfigFileSync(bad)).toThrow(/:2:11 limiter\.points/)
  })
})
