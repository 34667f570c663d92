/**
 * The options of `createAegis()` from a YAML or JSON file: parsed with the `yaml`
 * package (which keeps every node's position), `${NAME}` references replaced from the
 * environment, then checked by the same zod schema `createAegis()` uses. Every problem
 * comes back with its file, line and column, whether YAML or JSON syntax, a missing
 * variable or a schema issue mapped back to the node at its path; secrets stay
 * redacted. A content hash lets a watcher tell a real change from a touch.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import {
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
  type Document,
  type Node,
} from 'yaml'
import { AegisConfigError, type ConfigIssue } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { parseOptions, type AegisOptions } from '../options/index.js'
import { substitute, type ConfigEnv } from './env.js'
import { checkJson } from './json.js'

export type { ConfigEnv } from './env.js'

/** How a config text is written. */
export type ConfigFormat = 'yaml' | 'json'

/** How to read a config text. */
export interface ParseConfigOptions {
  /** Default: `json` for a `source` ending in `.json`, else `yaml`. */
  readonly format?: ConfigFormat
  /** The file's name in messages (`aegis.yaml:12:5 …`). Default: the path, or `<config>` for a text. */
  readonly source?: string
  /** Where `${NAME}` references are read from (default `process.env`); `false`: no substitution. */
  readonly env?: ConfigEnv | false
}

/** A config file read and checked. */
export interface LoadedConfig {
  /**
   * The options, ready for `createAegis()` — plain data: no function-valued option
   * (`logger`, `skip`, `onReject`, a limiter `key`, …) can come from a file; add those in
   * code (`createAegis({ ...loaded.options, logger })`). Checked as if a logger were passed.
   */
  readonly options: AegisOptions
  /** SHA-256 of the text (hex): equal hashes, same file content. */
  readonly hash: string
  readonly source: string
  readonly format: ConfigFormat
}

/** Files larger than this are refused unread (a config file is a few kilobytes). */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024
/** Most issues reported from one text: past a broken start, the rest is noise. */
const MAX_ISSUES = 50

/** Stands in for the logger the file cannot hold, so `accessLog: true` checks (never called). */
const ABSENT_LOGGER: Logger = { info() {}, warn() {}, error() {} }

const FUNCTION_ONLY =
  /^expected a function|^expected a pino-compatible logger|^expected a prom-client Registry/

/**
 * Read and check a config file (YAML, or JSON when its name ends in `.json`).
 * Throws `AegisConfigError` whose `issues` carry `source`, `line` and `column`.
 *
 * @example
 * const { options, hash } = await loadConfigFile('aegis.yaml')
 * const aegis = createAegis({ ...options, logger: pino() })
 */
export async function loadConfigFile(path: string, options: ParseConfigOptions = {}): Promise<LoadedConfig> {
  const source = options.source ?? path
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw unreadable(source, err)
  }
  return parseConfigText(decode(bytes, source), { ...options, source })
}

/**
 * `loadConfigFile()` for callers that cannot wait (a file watcher's `load`, startup code).
 *
 * @example
 * watchConfig(aegis, 'aegis.yaml', { load: (path) => loadConfigFileSync(path).options })
 */
export function loadConfigFileSync(path: string, options: ParseConfigOptions = {}): LoadedConfig {
  const source = options.source ?? path
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (err) {
    throw unreadable(source, err)
  }
  return parseConfigText(decode(bytes, source), { ...options, source })
}

function unreadable(source: string, err: unknown): AegisConfigError {
  return fileError(source, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err)
}

function decode(bytes: Buffer, source: string): string {
  if (bytes.length > MAX_CONFIG_BYTES)
    throw fileError(source, `the file is larger than ${MAX_CONFIG_BYTES} bytes`)
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch (err) {
    throw fileError(source, 'the file is not valid UTF-8', err)
  }
}

/**
 * Check a config text and return the options it holds. Throws `AegisConfigError`
 * listing every problem with its position (`issues[i].line`, `.column`), its message
 * one `source:line:column path: problem` line per issue.
 *
 * @example
 * parseConfigText('limiter:\n  points: ten\n', { source: 'aegis.yaml' })
 * // AegisConfigError: aegis.yaml:2:11 limiter.points: Invalid input: expected number, received string
 */
export function parseConfigText(text: string, options: ParseConfigOptions = {}): LoadedConfig {
  const source = options.source ?? '<config>'
  const format = options.format ?? (extname(source).toLowerCase() === '.json' ? 'json' : 'yaml')
  const hash = createHash('sha256').update(text, 'utf8').digest('hex')

  if (format === 'json') {
    const bad = checkJson(text)
    if (bad !== undefined) {
      const { line, column } = positionOf(text, bad.offset)
      throw located(source, [{ path: '', message: `JSON: ${bad.message}`, source, line, column }])
    }
  }

  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  const at = (offset: number): { source: string; line: number; column: number } => {
    const { line, col } = lines.linePos(offset)
    return { source, line, column: col }
  }
  // yaml's messages name the construct, never the text: nothing secret is quoted.
  const syntax = [...doc.errors, ...doc.warnings].map((e): ConfigIssue => ({
    path: '',
    message: `${format === 'json' ? 'JSON' : 'YAML'}: ${e.message}`,
    ...at(e.pos[0]),
  }))
  if (syntax.length > 0) throw located(source, syntax)

  const fromEnv = new Set<Node>()
  if (options.env !== false) {
    const env = options.env ?? process.env
    const missing: ConfigIssue[] = []
    visit(doc, {
      Scalar(key, node) {
        if (key === 'key' || typeof node.value !== 'string') return
        const result = substitute(node.value, env)
        if (!result.ok) {
          const segments = pathOf(doc, node)
          missing.push({
            path: segments.join('.'),
            segments,
            message: result.message,
            ...at(node.range?.[0] ?? 0),
          })
          return
        }
        if (result.references === 0) {
          node.value = result.value
          return
        }
        node.value = result.whole && node.type === 'PLAIN' ? typed(result.value) : result.value
        fromEnv.add(node)
      },
    })
    if (missing.length > 0) throw located(source, missing)
  }

  let value: unknown
  try {
    value = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    // An alias bomb ("billion laughs") or an alias to nothing.
    throw located(source, [{ path: '', message: `YAML: ${(err as Error).message}`, ...at(0) }])
  }
  const input = value ?? {}
  try {
    const isObject = typeof input === 'object' && !Array.isArray(input)
    parseOptions(isObject && !('logger' in input) ? { ...input, logger: ABSENT_LOGGER } : input)
  } catch (err) {
    if (!(err instanceof AegisConfigError)) throw err
    throw located(
      source,
      err.issues.map((issue) => place(doc, issue, fromEnv, at)),
    )
  }
  return { options: input, hash, source, format }
}

/**
 * One issue as a line: `source:line:column path: message (received …)`.
 *
 * @example
 * for (const issue of err.issues) console.error(formatConfigIssue(issue))
 */
export function formatConfigIssue(issue: ConfigIssue): string {
  const where =
    issue.source === undefined
      ? ''
      : issue.line === undefined
        ? `${issue.source}: `
        : `${issue.source}:${issue.line}:${issue.column ?? 1} `
  const path = issue.segments === undefined ? issue.path : displayPath(issue.segments)
  return `${where}${path === '' ? '' : `${path}: `}${issue.message}${issue.received === undefined ? '' : ` (received ${issue.received})`}`
}

/** `proxy[1].upstreams[0]`, `limiter.routes["POST /login"]`. */
function displayPath(segments: readonly (string | number)[]): string {
  let out = ''
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`
    else if (/^[A-Za-z_$][\w$-]*$/.test(s)) out += out === '' ? s : `.${s}`
    else out += `[${JSON.stringify(s)}]`
  }
  return out
}

function located(source: string, issues: ConfigIssue[], cause?: unknown): AegisConfigError {
  const shown = issues.slice(0, MAX_ISSUES)
  const more = issues.length - shown.length
  const message = `Invalid Aegis config file ${source}:\n${shown.map((i) => `  ${formatConfigIssue(i)}`).join('\n')}${more > 0 ? `\n  … and ${more} more` : ''}`
  const err = new AegisConfigError(shown, message)
  if (cause !== undefined)
    Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true })
  return err
}

function fileError(source: string, message: string, cause?: unknown): AegisConfigError {
  return located(source, [{ path: '', message, source }], cause)
}

/** 1-based line and column of a UTF-16 offset. */
function positionOf(text: string, offset: number): { line: number; column: number } {
  let line = 1
  let start = 0
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++
    start = i + 1
  }
  return { line, column: offset - start + 1 }
}

/** A whole-reference plain scalar takes the type its value has in YAML (`max: ${N}` → a number). */
function typed(value: string): unknown {
  if (/^[-+]?(?:\d+|\d*\.\d+)(?:[eE][-+]?\d+)?$/.test(value.trim())) return Number(value)
  if (value === 'true') return true
  if (value === 'false') return false
  return value
}

type Segment = string | number

/** Where a schema issue points: its path's node (the key for an unknown option), or its nearest ancestor. */
function place(
  doc: Document,
  issue: ConfigIssue,
  fromEnv: ReadonlySet<Node>,
  at: (offset: number) => { source: string; line: number; column: number },
): ConfigIssue {
  const segments: Segment[] =
    issue.segments === undefined
      ? issue.path === ''
        ? []
        : issue.path.split('.').map((s) => (/^\d+$/.test(s) ? Number(s) : s))
      : [...issue.segments]
  const last = segments[segments.length - 1]
  const atKey =
    issue.message === 'unknown option' ||
    (typeof last === 'string' && issue.received !== undefined && issue.received === JSON.stringify(last))
  const { node, exact } = nodeAt(doc, segments, atKey)
  const hinted = FUNCTION_ONLY.test(issue.message)
    ? `${issue.message} — a config file cannot hold one: pass it to createAegis() in code`
    : issue.received === 'null'
      ? `${issue.message} — the key has no value (in YAML an empty value is null; {} gives the defaults)`
      : issue.message
  return {
    ...issue,
    message: hinted,
    segments,
    // A value from the environment may be a secret whatever its key is called.
    ...(issue.received !== undefined && exact && node !== undefined && fromEnv.has(node)
      ? { received: '[redacted: from the environment]' }
      : {}),
    ...at(node?.range?.[0] ?? 0),
  }
}

/** The node at `segments` (or its key node), else the deepest one on the way. */
function nodeAt(
  doc: Document,
  segments: readonly Segment[],
  atKey: boolean,
): { node: Node | undefined; exact: boolean } {
  let node: Node | undefined = doc.contents ?? undefined
  for (let i = 0; i < segments.length; i++) {
    if (node !== undefined && isAlias(node)) node = node.resolve(doc) ?? node
    const segment = segments[i] as Segment
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(segment),
      )
      if (pair === undefined) return { node, exact: false }
      const isLast = i === segments.length - 1
      const value = pair.value as Node | null
      // `limiter:` with nothing after it has a null value whose position is the line's end: point at the key.
      if ((isLast && atKey) || value === null || (isScalar(value) && value.value === null))
        return { node: pair.key as Node, exact: isLast }
      node = value
    } else if (isSeq(node) && typeof segment === 'number' && node.items[segment] !== undefined) {
      node = node.items[segment] as Node
    } else {
      return { node, exact: false }
    }
  }
  return { node, exact: true }
}

/** The path of a scalar in the document, for a missing variable's issue. */
function pathOf(doc: Document, target: Node): Segment[] {
  const walk = (node: unknown, path: Segment[]): Segment[] | undefined => {
    if (node === target) return path
    if (isMap(node)) {
      for (const p of node.items) {
        if (!isPair(p)) continue
        const found = walk(p.value, [...path, isScalar(p.key) ? String(p.key.value) : '?'])
        if (found !== undefined) return found
      }
    } else if (isSeq(node)) {
      for (let i = 0; i < node.items.length; i++) {
        const found = walk(node.items[i], [...path, i])
        if (found !== undefined) return found
      }
    }
    return undefined
  }
  return walk(doc.contents, []) ?? []
}
