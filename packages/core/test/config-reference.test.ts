/**
 * The config file reference (packages/core/config-schema.json and the table in
 * docs/operations.md) is generated from the options schema by `pnpm docs:config`: these
 * tests regenerate both from the sources and fail when the committed ones are stale, and
 * check the JSON Schema with a real validator (ajv) against real config files — what it
 * accepts and refuses, the loader accepts and refuses too.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { Ajv } from 'ajv'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { AegisConfigError, parseConfigText } from '../src/index.js'
import { optionsSchema } from '../src/options/index.js'
import {
  ENV_REFERENCE_PATTERN,
  REFERENCE_END,
  REFERENCE_START,
  caseFolded,
  code,
  convertOptions,
  fileSchema,
  generate,
  headingAnchors,
  referenceTable,
  replaceBlock,
} from '../../../scripts/config-reference/generate.mjs'

const path = (relative: string): string => fileURLToPath(new URL(`../../../${relative}`, import.meta.url))
const read = (relative: string): string => readFileSync(path(relative), 'utf8')

const SCHEMA_PATH = 'packages/core/config-schema.json'
const REGENERATE = 'stale: run `pnpm docs:config` and commit the result'

const schema = JSON.parse(read(SCHEMA_PATH)) as Record<string, unknown>
/** The one format the schema uses, as the loader reads it (ajv knows none without ajv-formats). */
const formats = { uri: (s: string): boolean => URL.canParse(s) }
const ajv = new Ajv2020({ strict: true, allErrors: true, formats })
const validate = ajv.compile(schema)

/** The schema's verdict on a YAML text, as an editor would see it (no substitution). */
function schemaErrors(yaml: string): string[] {
  if (validate(parse(yaml) ?? {})) return []
  return (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`)
}

/** The loader's verdict on the same text. */
function loaderAccepts(yaml: string, env: Record<string, string> = {}): boolean {
  try {
    parseConfigText(yaml, { env })
    return true
  } catch (err) {
    if (err instanceof AegisConfigError) return false
    throw err
  }
}

// [YAML, accepted]: each agrees with the loader (the `${…}` ones with their variables set).
const CASES: readonly (readonly [string, boolean])[] = [
  ['{}', true],
  ['limiter:\n  points: 10\n  duration: 60\n', true],
  ['limiter: false\nvalidator: false\n', true],
  [
    "limiter:\n  routes:\n    'POST /login': [{ points: 5, duration: 60 }, { points: 50, duration: 3600 }]\n",
    true,
  ],
  [
    'proxy:\n  - prefix: /api\n    upstreams: [http://10.0.0.5:8080, { url: http://10.0.0.6:8080, weight: 2 }]\n',
    true,
  ],
  ['store:\n  redis: { host: cache, port: 6379, db: 2 }\n', true],
  ['cors:\n  origin: [HTTPS://App.Example.com]\n', true],
  ['audit:\n  checkpoint: { secret: 0123456789abcdef0123456789abcdef }\n', true],
  ['limiter:\n  points: ${RATE_POINTS:-300}\n  mode: ${RATE_MODE}\n', true],
  ['accessLog: ${ACCESS_LOG}\n', true],
  // An unknown key, at the top and nested.
  ['limiters:\n  points: 10\n', false],
  ['limiter:\n  nope: 1\n', false],
  // A string where a number goes, a number out of range, a value not in the enumeration.
  ['limiter:\n  points: ten\n', false],
  ['closeTimeout: "10000"\n', false],
  ['ipv6Subnet: 12\n', false],
  ['limiter:\n  algorithm: leaky-bucket\n', false],
  ['proxy:\n  - prefix: api\n    upstreams: [http://10.0.0.5:8080]\n', false],
  ['limiter:\n  routes:\n    login: { points: 5, duration: 60 }\n', false],
  // Options only code can pass.
  ['logger: pino\n', false],
  ['skip: "(req) => true"\n', false],
  ['limiter:\n  key: "req.headers.authorization"\n', false],
  // A `null` section (a key with nothing after it).
  ['limiter:\n', false],
]

describe('the generated files are current', () => {
  it('config-schema.json and the table of docs/operations.md are what optionsSchema generates', async () => {
    const generated = await generate({
      optionsSchema,
      configurationMd: read('docs/configuration.md'),
      operationsMd: read('docs/operations.md'),
      schemaPath: path(SCHEMA_PATH),
    })
    expect(read(SCHEMA_PATH), `${SCHEMA_PATH} is ${REGENERATE}`).toBe(generated.schemaJson)
    expect(read('docs/operations.md'), `docs/operations.md's reference is ${REGENERATE}`).toBe(
      generated.operationsMd,
    )
  })

  it('the table sits under its heading, inside the config file section of docs/operations.md', () => {
    const doc = read('docs/operations.md')
    const section = doc.slice(doc.indexOf('## Config file and `aegis serve`'), doc.indexOf('## Hot reload'))
    const heading = section.indexOf('### Reference (generated from the schema)')
    expect(heading).toBeGreaterThan(0)
    expect(section.indexOf(REFERENCE_START)).toBeGreaterThan(heading)
    expect(section.indexOf(REFERENCE_END)).toBeGreaterThan(section.indexOf(REFERENCE_START))
  })

  it('@aegis/core publishes the schema file', () => {
    const pkg = JSON.parse(read('packages/core/package.json')) as {
      exports: Record<string, unknown>
      files: string[]
    }
    expect(pkg.exports['./config-schema.json']).toBe('./config-schema.json')
    expect(pkg.files).toContain('config-schema.json')
  })
})

describe('the JSON Schema', () => {
  it('is draft 2020-12 with an $id, a title and a description, and compiles in strict mode', () => {
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema')
    expect(schema.$id).toMatch(/^https:\/\/.+\/config-schema\.json$/)
    expect(schema.title).toEqual(expect.any(String))
    expect(schema.description).toEqual(expect.any(String))
    expect(ajv.validateSchema(schema)).toBe(true)
  })

  it('says nothing a draft-07 validator (the YAML language server) reads otherwise', () => {
    const draft7 = new Ajv({ strict: true, allErrors: true, formats }).compile({
      ...schema,
      $schema: 'http://json-schema.org/draft-07/schema#',
    })
    for (const [yaml] of CASES) expect(draft7(parse(yaml) ?? {}), yaml).toBe(validate(parse(yaml) ?? {}))
  })

  it('accepts examples/aegis-serve/aegis.yaml, as written and with its ${NAME} references substituted', () => {
    const text = read('examples/aegis-serve/aegis.yaml')
    expect(schemaErrors(text)).toEqual([])
    // Its secrets come from the environment.
    const env = { AEGIS_ADMIN_TOKEN: 'a'.repeat(64), AEGIS_AUDIT_SECRET: 'b'.repeat(64) }
    const { options } = parseConfigText(text, { env })
    expect(validate(options), JSON.stringify(validate.errors)).toBe(true)
  })

  it('accepts the YAML examples of docs/operations.md as written', () => {
    const doc = read('docs/operations.md')
    const section = doc.slice(doc.indexOf('## Config file and `aegis serve`'), doc.indexOf('## Hot reload'))
    const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '')
    expect(blocks.length).toBeGreaterThanOrEqual(4)
    for (const block of blocks) expect(schemaErrors(block), block).toEqual([])
  })

  it.each(CASES)('%j: accepted %s, by the schema and by the loader', (yaml, accepted) => {
    expect(schemaErrors(yaml).length === 0, schemaErrors(yaml).slice(0, 3).join('\n')).toBe(accepted)
    expect(loaderAccepts(yaml, { RATE_POINTS: '120', RATE_MODE: 'observe', ACCESS_LOG: 'false' })).toBe(
      accepted,
    )
  })

  it('names the offending path of a wrong config', () => {
    expect(schemaErrors('limiter:\n  points: ten\n').join('\n')).toMatch(/\/limiter\/points must be integer/)
    expect(schemaErrors('limiters: {}\n').join('\n')).toMatch(/must NOT have additional properties/)
  })

  it('has no option only code can pass, at any depth', () => {
    /** The fields of the object at `path` (the object branch of a `false | {…}` section). */
    const fields = (...path: string[]): string[] => {
      let node = schema
      for (const key of path) {
        const branches = (node.anyOf as Record<string, unknown>[] | undefined) ?? [node]
        const object = branches.find((b) => b.properties !== undefined || b.items !== undefined)
        node = (
          key === '[]' ? object?.items : (object?.properties as Record<string, unknown>)[key]
        ) as Record<string, unknown>
      }
      const branches = (node.anyOf as Record<string, unknown>[] | undefined) ?? [node]
      return Object.keys(branches.find((b) => b.properties !== undefined)?.properties ?? {})
    }
    for (const [path, code] of [
      [[], ['logger', 'skip', 'onReject']],
      [['limiter'], ['key']],
      [
        ['proxy', '[]'],
        ['router', 'lookup'],
      ],
      [['anomaly'], ['challenge', 'clock']],
      [['audit'], ['sink']],
      [['metrics'], ['registry']],
      [['history'], ['clock']],
    ] as const) {
      expect(fields(...path).length, path.join('.')).toBeGreaterThan(0)
      for (const name of code) expect(fields(...path), path.join('.')).not.toContain(name)
    }
    expect(JSON.stringify(schema)).not.toContain('x-aegis-code-only')
  })

  it('takes a whole ${NAME} reference where the loader types one, and nothing else in its place', () => {
    const reference = new RegExp(ENV_REFERENCE_PATTERN)
    for (const good of ['${A}', '${RATE_POINTS:-300}', '${_x1:-}'])
      expect(reference.test(good), good).toBe(true)
    for (const bad of ['${1X}', 'x${A}', '${A}x', '$${A}', '${A'])
      expect(reference.test(bad), bad).toBe(false)
  })
})

describe('the reference table', () => {
  const converted = convertOptions(optionsSchema)
  const table = referenceTable(converted, read('docs/configuration.md'))
  const rows = table.split('\n').slice(2)
  const paths = rows.map((row) => /^\| \[?`([^`]+)`/.exec(row)?.[1])

  it('has a row for every top-level option, each linked to its section of configuration.md', () => {
    const anchors = headingAnchors(read('docs/configuration.md'))
    for (const key of Object.keys(optionsSchema.shape)) {
      const row = rows[paths.indexOf(key)]
      expect(row, key).toBeDefined()
      expect(row).toContain(`](configuration.md#${anchors.get(key) ?? 'missing'})`)
    }
  })

  it('writes paths, types, defaults, constraints and what only code can pass', () => {
    expect(paths).toContain('proxy[].upstreams[].url')
    expect(paths).toContain('limiter.routes.*.points')
    // `policy or policy[]`: the fields once, under the object's path.
    expect(paths.some((p) => p?.startsWith('limiter.routes.*[]'))).toBe(false)
    expect(new Set(paths).size).toBe(paths.length)
    const row = (p: string): string => rows[paths.indexOf(p)] ?? ''
    expect(row('store.commandTimeout')).toMatch(/\| integer \| `100` \| 5 to 10000 \|$/)
    expect(row('limiter.algorithm')).toContain('one of `"gcra"`, `"fixed-window"`')
    expect(row('limiter.routes.*.points')).toContain('| required |')
    expect(row('proxy[].requestId')).toContain('`"x-request-id"`') // a default zod leaves out on the input side
    expect(row('limiter.key')).toContain('| code only |')
    expect(row('limiter.cost')).toContain('number (more in code)')
    expect(row('validator.maxBodyBytes')).toMatch(/\| ≥ 0 \|$/) // no safe-integer bound
  })

  it('is the block that replaces the one between the markers', () => {
    const doc = `a\n${REFERENCE_START}\nold\n${REFERENCE_END}\nb\n`
    expect(replaceBlock(doc, `${REFERENCE_START}\nnew\n${REFERENCE_END}`)).toBe(
      `a\n${REFERENCE_START}\nnew\n${REFERENCE_END}\nb\n`,
    )
    expect(() => replaceBlock('no markers', 'x')).toThrow(/config-reference:start/)
  })
})

describe('helpers', () => {
  it('caseFolded: a case-insensitive regex without its flag', () => {
    const folded = new RegExp(caseFolded('^https?:\\/\\/[^/?#@\\s]+$'))
    expect(folded.test('HTTPS://App.Example.com')).toBe(true)
    expect(folded.test('https://app example')).toBe(false)
    expect(caseFolded('[a-c]x\\d')).toBe('[a-cA-C][xX]\\d')
    expect(() => caseFolded('[A-z]')).toThrow(/range/)
  })

  it('code: a code span that holds backticks and pipes in a table cell', () => {
    expect(code('a|b')).toBe('`a\\|b`')
    expect(code("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")).toBe("``^[!#$%&'*+\\-.^_`\\|~0-9A-Za-z]+$``")
    expect(code('`x')).toBe('`` `x ``')
  })

  it("headingAnchors: GitHub's anchors, code fences skipped", () => {
    const anchors = headingAnchors(
      '# Top\n## trustProxy\n```\n# not a heading\n```\n## `aegis serve` FILE\n## Top\n',
    )
    expect(anchors.get('trustProxy')).toBe('trustproxy')
    expect(anchors.get('aegis serve FILE')).toBe('aegis-serve-file')
    expect(anchors.has('not a heading')).toBe(false)
  })

  it('fileSchema: the converted schema without what only code can pass', () => {
    const file = fileSchema(convertOptions(optionsSchema))
    expect(Object.keys(file.properties as object)).not.toContain('logger')
    expect(file.$defs).toHaveProperty('envReference')
  })
})
