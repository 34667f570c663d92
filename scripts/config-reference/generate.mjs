/**
 * The config file reference, generated from the options schema (`optionsSchema`, zod 4):
 * - a JSON Schema (draft 2020-12) of what a YAML or JSON config file may hold, shipped as
 *   `@aegis/core/config-schema.json` for editors;
 * - a Markdown table of every option path (type, default, constraints, a link to its
 *   section of docs/configuration.md), between marker comments in docs/operations.md.
 *
 * `pnpm docs:config` (scripts/config-reference.mjs) writes both from the built package;
 * packages/core/test/config-reference.test.ts regenerates them from the sources and fails
 * when the committed ones differ. Nothing here is written about any one option: it all
 * comes from zod's own conversion, `z.toJSONSchema(schema, { io: 'input' })`, then
 * - `z.custom()` / `z.instanceof()` values (zod cannot describe them) are asked what JSON
 *   they accept: their predicate is tried on a string, a number, a boolean, an array and
 *   an object. One that takes none (a function, a logger, a Redis client, a RegExp, a
 *   Buffer) cannot come from a file: the file's schema leaves it out (an unknown key to an
 *   editor), and the Markdown lists it as code only;
 * - a default zod leaves out on the input side (one whose schema transforms) is put back
 *   when the default value also parses as an input;
 * - a case-insensitive regex (zod drops the flag) is written case-folded;
 * - in the file's schema, a value of a fixed type or shape may also be a whole
 *   `${NAME}` reference, which the loader substitutes from the environment.
 * Any JSON Schema keyword this module does not know stops the generation, so a new kind
 * of option cannot go missing from the reference unnoticed.
 */
import { format, resolveConfig } from 'prettier'
import { z } from 'zod'

export const SCHEMA_ID =
  'https://raw.githubusercontent.com/aegis-js/aegis/main/packages/core/config-schema.json'
export const REFERENCE_START = '<!-- config-reference:start -->'
export const REFERENCE_END = '<!-- config-reference:end -->'

/** Marks, while converting, a value only code can pass; never left in what is written. */
const CODE_ONLY = 'x-aegis-code-only'

/** A `${NAME}` or `${NAME:-default}` reference, the whole value (the loader's syntax, config-file/env.ts). */
export const ENV_REFERENCE_PATTERN = '^\\$\\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\\}$'
const ENV_REFERENCE = { $ref: '#/$defs/envReference' }

/** What each JSON type is tried with, to learn which a custom schema accepts. */
const SAMPLES = [
  ['string', ''],
  ['number', 0],
  ['boolean', false],
  ['array', []],
  ['object', {}],
]

/** The keywords the walks below understand; any other stops the generation. */
const STRUCTURE = new Set([
  'anyOf',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'propertyNames',
])
const VALIDATION = new Set([
  'type',
  'const',
  'enum',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'minLength',
  'maxLength',
  'pattern',
  'format',
  'minItems',
  'maxItems',
  'uniqueItems',
])
const KNOWN = new Set([...STRUCTURE, ...VALIDATION, 'default', CODE_ONLY])

/** The formats of JSON Schema 2020-12 (zod also writes its own, such as `starts_with`, beside a pattern). */
const FORMATS = new Set([
  'date-time',
  'date',
  'time',
  'duration',
  'email',
  'idn-email',
  'hostname',
  'idn-hostname',
  'ipv4',
  'ipv6',
  'uri',
  'uri-reference',
  'iri',
  'iri-reference',
  'uuid',
  'uri-template',
  'json-pointer',
  'relative-json-pointer',
  'regex',
])

/** The JSON form of a custom schema, from what its predicate accepts; none: code only. */
function customForm({ zodSchema, message }) {
  const def = zodSchema._zod.def
  if (def.type !== 'custom' || typeof def.fn !== 'function') throw new Error(message)
  const types = SAMPLES.filter(([, sample]) => {
    try {
      const accepted = def.fn(sample)
      return Boolean(accepted) && !(accepted instanceof Promise)
    } catch {
      return false
    }
  }).map(([type]) => type)
  if (types.length === 0) return { [CODE_ONLY]: true }
  return { type: types.length === 1 ? types[0] : types }
}

const isJson = (value) => {
  try {
    return JSON.stringify(JSON.parse(JSON.stringify(value))) === JSON.stringify(value)
  } catch {
    return false
  }
}

/** `[hH][tT]…`: a regex source that matches what `new RegExp(source, 'i')` matches (ASCII letters). */
export function caseFolded(source) {
  if (/\(\?<[^=!]|\\k<|\\[pP]\{/.test(source))
    throw new Error(`cannot case-fold /${source}/i (named groups, Unicode properties)`)
  const other = (c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())
  const isLetter = (c) => /^[A-Za-z]$/.test(c)
  let out = ''
  let inClass = false
  for (let i = 0; i < source.length; i++) {
    const c = source[i]
    if (c === '\\') {
      const escape = /^\\(?:x[\da-fA-F]{2}|u[\da-fA-F]{4}|u\{[\da-fA-F]+\}|c[A-Za-z]|[\s\S])/.exec(
        source.slice(i),
      )[0]
      out += escape
      i += escape.length - 1
    } else if (inClass) {
      const range = /^([A-Za-z])-([A-Za-z])/.exec(source.slice(i))
      if (range !== null) {
        const [whole, from, to] = range
        if (isLetter(from) !== isLetter(to) || (from === from.toLowerCase()) !== (to === to.toLowerCase()))
          throw new Error(`cannot case-fold the range ${whole} of /${source}/i`)
        out += `${whole}${other(from)}-${other(to)}`
        i += whole.length - 1
      } else {
        if (c === ']') inClass = false
        out += isLetter(c) ? c + other(c) : c
      }
    } else if (c === '[') {
      inClass = true
      out += c
      if (source[i + 1] === '^') out += source[++i]
      if (source[i + 1] === ']') out += source[++i] // a leading ] is literal
    } else {
      out += isLetter(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c
    }
  }
  return out
}

/**
 * What zod's conversion loses or gets wrong: defaults of transforming schemas, regex
 * flags, and formats JSON Schema does not define (zod's `starts_with` comes with its
 * pattern, which says the same).
 */
function restore({ zodSchema, jsonSchema }) {
  const def = zodSchema._zod.def
  if ((def.type === 'default' || def.type === 'prefault') && !('default' in jsonSchema)) {
    const value = def.defaultValue
    if (isJson(value) && def.innerType.safeParse(value).success) jsonSchema.default = value
  }
  if (def.type === 'string') {
    const patterns = (def.checks ?? [])
      .map((check) => check._zod.def.pattern)
      .filter((p) => p instanceof RegExp)
    for (const regex of patterns) {
      const flags = regex.flags.replace(/[guy]/g, '')
      if (flags === '') continue
      if (flags !== 'i' || jsonSchema.pattern !== regex.source)
        throw new Error(`cannot write the flags of /${regex.source}/${regex.flags} in JSON Schema`)
      jsonSchema.pattern = caseFolded(regex.source)
    }
    if (jsonSchema.format !== undefined && !FORMATS.has(jsonSchema.format)) {
      if (jsonSchema.pattern === undefined)
        throw new Error(`zod's format ${jsonSchema.format} is not JSON Schema's, and comes with no pattern`)
      delete jsonSchema.format
    }
  }
}

/** Check every keyword, and make `anyOf` flat (a union of unions is one union). */
function normalize(node, path) {
  for (const key of Object.keys(node))
    if (!KNOWN.has(key))
      throw new Error(`${path || '(root)'}: the reference does not know JSON Schema's ${key}`)
  const out = { ...node }
  if (out.anyOf !== undefined) {
    out.anyOf = out.anyOf.flatMap((branch) => {
      const b = normalize(branch, path)
      return Object.keys(b).length === 1 && b.anyOf !== undefined ? b.anyOf : [b]
    })
  }
  if (out.properties !== undefined)
    out.properties = Object.fromEntries(
      Object.entries(out.properties).map(([key, child]) => [key, normalize(child, join(path, key))]),
    )
  if (typeof out.additionalProperties === 'object')
    out.additionalProperties = normalize(out.additionalProperties, `${path}.*`)
  if (out.items !== undefined) out.items = normalize(out.items, `${path}[]`)
  if (out.propertyNames !== undefined) out.propertyNames = normalize(out.propertyNames, `${path} keys`)
  return out
}

const join = (path, key) => (path === '' ? key : `${path}.${key}`)

/**
 * The options schema as JSON Schema, input side, every value a file cannot hold still
 * marked (`x-aegis-code-only`): what `fileSchema()` and `referenceTable()` start from.
 */
export function convertOptions(optionsSchema) {
  const converted = z.toJSONSchema(optionsSchema, {
    target: 'draft-2020-12',
    io: 'input',
    unrepresentable: customForm,
    override: restore,
    cycles: 'throw',
    reused: 'inline',
  })
  const { $schema, ...root } = converted
  return { $schema, ...normalize(root, '') }
}

/** The part of `node` a file can hold; `undefined` when it is code only. */
export function fileForm(node) {
  if (node[CODE_ONLY] === true) return undefined
  const out = { ...node }
  if (out.anyOf !== undefined) {
    const kept = out.anyOf.map(fileForm).filter((b) => b !== undefined)
    if (kept.length === 0) return undefined
    delete out.anyOf
    if (kept.length === 1) {
      for (const [key, value] of Object.entries(kept[0])) {
        if (key in out && JSON.stringify(out[key]) !== JSON.stringify(value))
          throw new Error(`cannot merge ${key} of a union's one file form`)
        out[key] = value
      }
    } else {
      out.anyOf = kept
    }
  }
  if (out.properties !== undefined) {
    const properties = {}
    for (const [key, child] of Object.entries(out.properties)) {
      const form = fileForm(child)
      if (form !== undefined) properties[key] = form
      else if (out.required?.includes(key)) return undefined // a required option a file cannot give
    }
    out.properties = properties
  }
  if (typeof out.additionalProperties === 'object') {
    const form = fileForm(out.additionalProperties)
    if (form === undefined) return undefined
    out.additionalProperties = form
  }
  if (out.items !== undefined) {
    const form = fileForm(out.items)
    if (form === undefined) return undefined
    out.items = form
  }
  return out
}

/** The shortest reference, `${A}`. */
const SHORTEST_REFERENCE = 4

/** Whether `node` already takes any `${NAME}` reference as a string: no constraint a reference could break. */
const takesAnyString = (node) =>
  node.anyOf !== undefined
    ? node.anyOf.some(takesAnyString)
    : node.type === 'string' &&
      node.const === undefined &&
      node.enum === undefined &&
      node.pattern === undefined &&
      node.format === undefined &&
      node.maxLength === undefined &&
      (node.minLength ?? 0) <= SHORTEST_REFERENCE

const SCALARS = new Set(['string', 'number', 'integer', 'boolean'])

/** A string, number or boolean (a `const`, an enumeration, a range): what a reference may stand for. */
const isScalar = (node) =>
  node.anyOf === undefined &&
  node.properties === undefined &&
  node.items === undefined &&
  node.additionalProperties === undefined &&
  [node.type ?? []].flat().some((type) => SCALARS.has(type))

/**
 * Let every scalar the loader may type from the environment be a whole `${NAME}`
 * reference: `points: ${RATE_POINTS:-300}` is a number once loaded. A union gets one
 * reference branch (its scalar branches are left as they are).
 */
function withEnvReferences(node, { wrap = true } = {}) {
  const out = { ...node }
  if (out.properties !== undefined)
    out.properties = Object.fromEntries(
      Object.entries(out.properties).map(([key, child]) => [key, withEnvReferences(child)]),
    )
  if (typeof out.additionalProperties === 'object')
    out.additionalProperties = withEnvReferences(out.additionalProperties)
  if (out.items !== undefined) out.items = withEnvReferences(out.items)
  if (out.anyOf !== undefined) {
    out.anyOf = out.anyOf.map((branch) => withEnvReferences(branch, { wrap: false }))
    if (out.anyOf.some(isScalar) && !takesAnyString(out)) out.anyOf.push(ENV_REFERENCE)
    return out
  }
  if (!wrap || !isScalar(out) || takesAnyString(out)) return out
  const { default: fallback, ...value } = out
  return { ...(fallback === undefined ? {} : { default: fallback }), anyOf: [value, ENV_REFERENCE] }
}

/** The JSON Schema of a config file: `packages/core/config-schema.json`. */
export function fileSchema(converted) {
  const { $schema, ...root } = fileForm(converted)
  return {
    $schema,
    $id: SCHEMA_ID,
    title: 'Aegis config file',
    description:
      'The options of createAegis() as a YAML or JSON file (aegis serve, loadConfigFile). Generated from ' +
      'optionsSchema by `pnpm docs:config`: do not edit. Options whose value is code (functions, a logger, ' +
      'a Redis client, regular expressions) are not here: pass them in code. The loader also checks what ' +
      'JSON Schema cannot say (URLs, certificates, rules between options). A scalar may be a ${NAME} ' +
      'reference, replaced from the environment.',
    ...withEnvReferences(root),
    $defs: {
      envReference: {
        type: 'string',
        pattern: ENV_REFERENCE_PATTERN,
        description: 'A ${NAME} or ${NAME:-default} environment variable, replaced when the file is loaded',
      },
    },
  }
}

// ---------------------------------------------------------------------------------------
// Markdown

/** A Markdown code span of `text`, safe in a table cell. */
export function code(text) {
  const longest = Math.max(0, ...[...text.matchAll(/`+/g)].map((m) => m[0].length))
  const fence = '`'.repeat(longest + 1)
  const pad = text.startsWith('`') || text.endsWith('`') ? ' ' : ''
  return `${fence}${pad}${text.replace(/\|/g, '\\|')}${pad}${fence}`
}

/** A value as one line of JSON with a space after each comma: `[502, 503, 504]`. */
const json = (value) =>
  code(
    JSON.stringify(value, null, 1)
      .replace(/([[{])\n */g, '$1')
      .replace(/\n *([\]}])/g, '$1')
      .replace(/\n */g, ' '),
  )

/** GitHub's anchors of a Markdown text's headings, by heading text (backticks dropped). */
export function headingAnchors(markdown) {
  const anchors = new Map()
  const used = new Map()
  let fenced = false
  for (const line of markdown.split('\n')) {
    if (/^(```|~~~)/.test(line)) fenced = !fenced
    const m = fenced ? null : /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line)
    if (m === null) continue
    const text = m[1].replace(/`/g, '')
    const slug = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-')
    const n = used.get(slug) ?? 0
    used.set(slug, n + 1)
    if (!anchors.has(text)) anchors.set(text, n === 0 ? slug : `${slug}-${n}`)
  }
  return anchors
}

/** The row's link: the deepest heading of configuration.md named like the path or a parent of it. */
function docsAnchor(path, anchors) {
  const segments = path
    .replace(/\[\]/g, '')
    .split('.')
    .filter((s) => s !== '*')
  for (let n = segments.length; n > 0; n--) {
    const anchor = anchors.get(segments.slice(0, n).join('.'))
    if (anchor !== undefined) return anchor
  }
  return undefined
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`

function typeOf(node) {
  if (node.anyOf !== undefined) return [...new Set(node.anyOf.map(typeOf))].join(' or ')
  if ('const' in node) return json(node.const)
  const types = node.type === undefined ? [] : [node.type].flat()
  if (types.length === 0) return node.properties !== undefined ? 'object' : 'any'
  return types
    .map((type) => {
      if (type === 'array') {
        const item = node.items === undefined ? 'any' : typeOf(node.items)
        return / /.test(item) ? `(${item})[]` : `${item}[]`
      }
      if (type === 'object' && typeof node.additionalProperties === 'object') {
        const value = typeOf(node.additionalProperties)
        return / or /.test(value) ? `map of (${value})` : `map of ${value}`
      }
      return type
    })
    .join(' or ')
}

/** `1 to 32`, `≥ 0`, `> 0, ≤ 1`; a safe-integer bound (zod's for every integer) goes without saying. */
function range(low, high, unit) {
  const [min, minStrict] = low[0] === Number.MIN_SAFE_INTEGER ? [] : low
  const [max, maxStrict] = high[0] === Number.MAX_SAFE_INTEGER ? [] : high
  const u = unit === '' ? '' : ` ${unit}`
  if (min !== undefined && max !== undefined && !minStrict && !maxStrict) return `${min} to ${max}${u}`
  return [
    min === undefined ? undefined : `${minStrict ? '>' : '≥'} ${min}${u}`,
    max === undefined ? undefined : `${maxStrict ? '<' : '≤'} ${max}${u}`,
  ]
    .filter((s) => s !== undefined)
    .join(', ')
}

/** The constraints of one (non-union) node, as short phrases. */
function constraintsOf(node) {
  const out = []
  if (node.enum !== undefined) out.push(`one of ${node.enum.map((v) => json(v)).join(', ')}`)
  const low = node.exclusiveMinimum !== undefined ? [node.exclusiveMinimum, true] : [node.minimum, false]
  const high = node.exclusiveMaximum !== undefined ? [node.exclusiveMaximum, true] : [node.maximum, false]
  if (low[0] !== undefined || high[0] !== undefined) {
    const bounds = range(low, high, '')
    if (bounds !== '') out.push(bounds)
  }
  if (node.multipleOf !== undefined) out.push(`a multiple of ${node.multipleOf}`)
  if (node.minLength !== undefined || node.maxLength !== undefined) {
    if (node.minLength === 1 && node.maxLength === undefined) out.push('not empty')
    else out.push(`length ${range([node.minLength, false], [node.maxLength, false], '')}`)
  }
  if (node.pattern !== undefined) out.push(`pattern ${code(node.pattern)}`)
  if (node.format !== undefined) out.push(`format ${node.format}`)
  if (node.minItems !== undefined || node.maxItems !== undefined) {
    if (node.minItems === 1 && node.maxItems === undefined) out.push('at least 1 item')
    else if (node.minItems === undefined) out.push(`at most ${plural(node.maxItems, 'item')}`)
    else out.push(range([node.minItems, false], [node.maxItems, false], 'items'))
  }
  if (node.uniqueItems === true) out.push('no duplicates')
  if (node.items !== undefined && node.items.anyOf === undefined) {
    const items = constraintsOf(node.items)
    if (items.length > 0) out.push(`each: ${items.join(', ')}`)
  }
  if (node.propertyNames !== undefined) {
    const keys = constraintsOf(node.propertyNames)
    if (keys.length > 0) out.push(`keys: ${keys.join(', ')}`)
  }
  return out
}

function constraintsCell(node) {
  if (node.anyOf === undefined) return constraintsOf(node).join(', ')
  const parts = node.anyOf
    .map((branch) => [typeOf(branch), constraintsOf(branch)])
    .filter(([, list]) => list.length > 0)
  return parts.map(([type, list]) => `${type}: ${list.join(', ')}`).join('; ')
}

/** Whether part of what `node` accepts can only be given in code (a function beside a number). */
const hasCodeForms = (node) =>
  (node.anyOf !== undefined && node.anyOf.some((b) => fileForm(b) === undefined || hasCodeForms(b))) ||
  (node.items !== undefined && hasCodeForms(node.items))

/** A union's `T[]` branch whose `T` is another of its branches (`policy or policy[]`): its fields are that branch's. */
const repeatsBranch = (branch, branches) =>
  branch.items !== undefined &&
  branches.some((other) => other !== branch && JSON.stringify(other) === JSON.stringify(branch.items))

/** Every option path with its node and whether its object requires it, depth first. */
function* optionsOf(node, path) {
  const branches = node.anyOf ?? [node]
  for (const branch of branches) {
    if (repeatsBranch(branch, branches)) continue
    for (const [key, child] of Object.entries(branch.properties ?? {})) {
      const childPath = join(path, key)
      yield { path: childPath, node: child, required: branch.required?.includes(key) === true }
      yield* optionsOf(child, childPath)
    }
    if (typeof branch.additionalProperties === 'object') {
      const childPath = `${path}.*`
      yield { path: childPath, node: branch.additionalProperties, required: false }
      yield* optionsOf(branch.additionalProperties, childPath)
    }
    if (branch.items !== undefined) yield* optionsOf(branch.items, `${path}[]`)
  }
}

/**
 * The reference table: one row per option path — `proxy[].upstreams[].url` for a field of
 * an array's items, `limiter.routes.*` for the values of a map — with its type, default
 * and constraints, the path linked to its section of configuration.md.
 */
export function referenceTable(converted, configurationMd) {
  const anchors = headingAnchors(configurationMd)
  const rows = ['| Option | Type | Default | Constraints |', '|---|---|---|---|']
  const seen = new Set()
  for (const { path, node, required } of optionsOf(converted, '')) {
    if (seen.has(path)) throw new Error(`two options at ${path}: the reference cannot tell them apart`)
    seen.add(path)
    const anchor = docsAnchor(path, anchors)
    const name = anchor === undefined ? code(path) : `[${code(path)}](configuration.md#${anchor})`
    const form = fileForm(node)
    if (form === undefined) {
      rows.push(`| ${name} | code only | | not in a file: pass it to \`createAegis()\` |`)
      continue
    }
    const type = `${typeOf(form)}${hasCodeForms(node) ? ' (more in code)' : ''}`
    const fallback = 'default' in form ? json(form.default) : required ? 'required' : ''
    rows.push(`| ${name} | ${type} | ${fallback} | ${constraintsCell(form)} |`)
  }
  return rows.join('\n')
}

/** The generated block, markers included. */
export function referenceBlock(converted, configurationMd) {
  return [
    REFERENCE_START,
    '<!-- Generated from optionsSchema by `pnpm docs:config`: edit the schema, not this table. -->',
    '',
    referenceTable(converted, configurationMd),
    '',
    REFERENCE_END,
  ].join('\n')
}

/** `markdown` with the text between the markers replaced by `block`. */
export function replaceBlock(markdown, block) {
  const start = markdown.indexOf(REFERENCE_START)
  const end = markdown.indexOf(REFERENCE_END)
  if (start === -1 || end < start) throw new Error(`no ${REFERENCE_START} … ${REFERENCE_END} block`)
  return markdown.slice(0, start) + block + markdown.slice(end + REFERENCE_END.length)
}

/** The schema file's text, formatted as prettier formats the repository's JSON. */
export async function schemaText(schema, filepath) {
  const options = (await resolveConfig(filepath)) ?? {}
  return format(JSON.stringify(schema), { ...options, filepath })
}

/**
 * Both outputs from the options schema and the current documents.
 *
 * @example
 * const { schemaJson, operationsMd } = await generate({ optionsSchema, configurationMd, operationsMd, schemaPath })
 */
export async function generate({ optionsSchema, configurationMd, operationsMd, schemaPath }) {
  const converted = convertOptions(optionsSchema)
  return {
    schemaJson: await schemaText(fileSchema(converted), schemaPath),
    operationsMd: replaceBlock(operationsMd, referenceBlock(converted, configurationMd)),
  }
}
