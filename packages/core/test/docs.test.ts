/**
 * Keeps the documentation honest: every option of the schema has a row in
 * docs/configuration.md whose documented default is the parsed default, and every
 * error and warning code has its section in docs/errors.md (problem `type` URIs
 * link to those sections).
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { AegisConfigError, ErrorCodes, WarningCodes } from '../src/kernel/errors.js'
import { optionsSchema, parseOptions } from '../src/options/index.js'
import { ERRORS_DOC, problem } from '../src/kernel/problem.js'

const read = (path: string): string => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8')
const configurationMd = read('docs/configuration.md')
const errorsMd = read('docs/errors.md')

/** Strip the wrappers that carry defaults and optionality, down to the schema that holds the shape. */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault) s = s.def.innerType as z.ZodType
    else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.def.innerType as z.ZodType
    else if (s instanceof z.ZodPipe) s = s.def.in as z.ZodType
    else return s
  }
}

/** Every option path of a schema, nested sections included (`headers.hsts.maxAge`). */
function optionPaths(schema: z.ZodType, prefix = ''): string[] {
  const s = unwrap(schema)
  if (s instanceof z.ZodObject) {
    return Object.entries(s.shape as Record<string, z.ZodType>).flatMap(([key, child]) => {
      const path = prefix === '' ? key : `${prefix}.${key}`
      return [path, ...optionPaths(child, path)]
    })
  }
  // A section is `false | {…}`; only object branches have nested options.
  if (s instanceof z.ZodUnion) return (s.options as z.ZodType[]).flatMap((o) => optionPaths(o, prefix))
  return []
}

interface Row {
  readonly path: string
  readonly defaultCell: string
}

/** The option tables: `| \`path\` | type | default | meaning |`, cells split on unescaped pipes. */
function optionRows(markdown: string): Row[] {
  const rows: Row[] = []
  for (const line of markdown.split('\n')) {
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim())
    // ['', '`path`', type, default, meaning, '']
    if (cells.length !== 6) continue
    const m = /^`([A-Za-z][\w.]*)`$/.exec(cells[1] ?? '')
    if (m?.[1] === undefined) continue
    rows.push({ path: m[1], defaultCell: cells[3] ?? '' })
  }
  return rows
}

/** A documented default: a JS literal in backticks (single quotes allowed), or a word. */
type Documented =
  { kind: 'value'; value: unknown } | { kind: 'unset' } | { kind: 'on' } | { kind: 'required' }

function parseDefault(cell: string): Documented {
  if (/^unset\b/.test(cell)) return { kind: 'unset' }
  if (/^on\b/.test(cell)) return { kind: 'on' }
  if (/^required\b/.test(cell)) return { kind: 'required' }
  const m = /^`([^`]*)`/.exec(cell)
  if (m?.[1] === undefined) throw new Error(`unreadable default cell: ${cell}`)
  return { kind: 'value', value: JSON.parse(m[1].replace(/'/g, '"')) as unknown }
}

function valueAt(config: unknown, path: string): unknown {
  let v = config
  for (const key of path.split('.')) {
    if (typeof v !== 'object' || v === null) return undefined
    v = (v as Record<string, unknown>)[key]
  }
  return v
}

/** Options that name the sections above `path` and nothing else: `{ cors: {} }` for `cors.origin`. */
function requiredInput(path: string): unknown {
  return path
    .split('.')
    .slice(0, -1)
    .reduceRight<unknown>((inner, key) => ({ [key]: inner }), {})
}

function issuePaths(input: unknown): string[] {
  try {
    parseOptions(input as never)
  } catch (err) {
    if (err instanceof AegisConfigError) return err.issues.map((i) => i.path)
    throw err
  }
  return []
}

const defaults = parseOptions({})
// Opt-in sections are off by default; their nested defaults are those of a minimal enabled section.
const optIn = parseOptions({
  cors: { origin: 'https://app.example.com' },
  limiter: { adaptive: {}, shed: {} },
  breaker: {},
  chaos: { abort: { percent: 1 } },
  ghost: true,
  admin: { token: 'a-token-of-sixteen-characters' },
  history: true,
})
const optInPrefixes = [
  'cors.',
  'limiter.adaptive.',
  'limiter.shed.',
  'breaker.',
  'chaos.abort.',
  'ghost.',
  'admin.',
  'history.',
]
const defaultAt = (path: string): unknown =>
  valueAt(optInPrefixes.some((p) => path.startsWith(p)) ? optIn : defaults, path)

const paths = optionPaths(optionsSchema)
const rows = optionRows(configurationMd)

describe('docs/configuration.md', () => {
  it('finds the options in the schema', () => {
    // Guards the walker itself: nested sections must be reached.
    expect(paths).toEqual(
      expect.arrayContaining([
        'trustProxy',
        'validator.maxBodyBytes',
        'headers.hsts.maxAge',
        'cors.origin',
        'metrics.buckets',
        'closeTimeout',
      ]),
    )
  })

  it.each(paths)('documents `%s`', (path) => {
    expect(configurationMd).toContain(`\`${path}\``)
    expect(rows.filter((r) => r.path === path)).toHaveLength(1)
  })

  it('documents no option the schema lacks', () => {
    expect(rows.map((r) => r.path).filter((p) => !paths.includes(p))).toEqual([])
  })

  it('has one section per top-level option', () => {
    for (const key of Object.keys(optionsSchema.shape)) {
      expect(configurationMd).toMatch(new RegExp(`^## ${key}$`, 'm'))
    }
  })

  it.each(rows.map((r) => [r.path, r.defaultCell] as const))(
    'states the default of `%s` as parsed',
    (path, cell) => {
      const documented = parseDefault(cell)
      const actual = defaultAt(path)
      if (documented.kind === 'value') expect(actual).toEqual(documented.value)
      else if (documented.kind === 'unset') expect(actual).toBeUndefined()
      else if (documented.kind === 'on') expect(actual).toBeTypeOf('object')
      else expect(issuePaths(requiredInput(path))).toContain(path)
    },
  )

  it.each([
    ['trustProxy', false],
    ['ipv6Subnet', 64],
    ['validator.maxBodyBytes', 1_048_576],
    ['validator.methods', ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']],
    ['validator.maxHeaders', 100],
    ['validator.maxHeaderBytes', 8192],
    ['validator.traversal', true],
    ['headers.frameOptions', 'DENY'],
    ['headers.permissionsPolicy', defaults.headers && defaults.headers.permissionsPolicy],
    ['headers.hsts.maxAge', 31_536_000],
    ['headers.hsts.preload', false],
    ['headers.contentSecurityPolicy', false],
    ['headers.crossOriginEmbedderPolicy', false],
    ['cors', false],
    ['cors.maxAge', 600],
    ['metrics.prefix', 'aegis_'],
    ['metrics.maxRoutes', 500],
    ['accessLog', false],
    ['closeTimeout', 10_000],
  ] as const)('documents the key default `%s`', (path, expected) => {
    const row = rows.find((r) => r.path === path)
    expect(row, `no table row for ${path}`).toBeDefined()
    const documented = parseDefault(row?.defaultCell ?? '')
    expect(documented).toEqual({ kind: 'value', value: expected })
    expect(defaultAt(path)).toEqual(expected)
  })
})

describe('docs/errors.md', () => {
  const headings = [...errorsMd.matchAll(/^## (AEGIS_\w+)$/gm)].map((m) => m[1])
  const codes = [...Object.values(ErrorCodes), ...Object.values(WarningCodes)]

  it.each(codes)('has a section for %s', (code) => {
    expect(headings.filter((h) => h === code)).toHaveLength(1)
  })

  it('documents no code that does not exist', () => {
    expect(headings.filter((h) => !(codes as readonly string[]).includes(h ?? ''))).toEqual([])
  })

  it('is where problem types point, by the heading anchor', () => {
    expect(ERRORS_DOC).toMatch(/\/docs\/errors\.md$/)
    for (const code of Object.values(ErrorCodes)) {
      const body = JSON.parse(problem({ status: 400, code, reason: 'test', title: 'Bad Request' }).body) as {
        type: string
      }
      // GitHub's anchor for `## AEGIS_ERR_X` is the heading lower-cased.
      expect(body.type).toBe(`${ERRORS_DOC}#${code.toLowerCase()}`)
    }
  })
})
