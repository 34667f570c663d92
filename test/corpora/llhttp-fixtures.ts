/**
 * Reader for nodejs/llhttp's request fixtures (test/corpora/data/llhttp-request-fixtures,
 * MIT, Copyright © 2018 Fedor Indutny; the licence is in the folder's LICENSE file).
 * Each case is a Markdown section: `<!-- meta={...} -->`, an `http` block with the
 * raw input and a `log` block with the parser events llhttp emits for it.
 */
import { readdirSync } from 'node:fs'
import { CORPORA, readCorpus } from './support.js'

export interface LlhttpCase {
  file: string
  /** The headings above the case, e.g. `Content-Length header › Error on overflow`. */
  title: string
  meta: { type: string; noScan?: boolean; pause?: string; skipBody?: boolean }
  /** The wire bytes, built by the corpus README's four rules. */
  bytes: Buffer
  log: string[]
  /** The log has `error code=`: llhttp refuses the input in its mode. */
  error: boolean
  /** The log's `reason="…"` for that error. */
  errorReason: string | undefined
  /** `request-lenient-*`: the verdict needs a lenient flag Node's server never sets. */
  lenient: boolean
  /** `message complete` events before the first error (all of them when there is none). */
  completeBeforeError: number
  /** Offsets (into `bytes`) where each message begins, from the log. */
  messageStarts: number[]
  /**
   * The error comes after the erroring message's head was complete (a bad chunk,
   * a missing last-chunk): a server has handed the request to the app by then.
   */
  errorInBody: boolean
  /**
   * The log ends inside a message: a server would wait for more bytes. Also set
   * for `skipBody` (a harness mode that skips the body a server would wait for).
   */
  incomplete: boolean
  /** The input already names a Host header (in any message). */
  hasHost: boolean
}

const DIR = new URL('llhttp-request-fixtures/', CORPORA)

/**
 * The corpus README's rules, in order: (1) drop the block's final newline,
 * (2) delete a line-ending backslash with its line break, (3) turn each remaining
 * line break into CRLF, (4) turn the literal two-character `\r` and `\n` into CR and LF.
 *
 * The README's summary stops there, but the fixtures also spell TAB, FF, 0xFF and
 * other bytes as `\t`, `\f`, `\xff` and octal `\01` / `\033` (the obs-fold,
 * control-character and token cases), and upstream's harness (llhttp
 * test/md-test.ts) turns those into bytes too, in this order, then sends the
 * string as UTF-8. Without that step `Header1: \f` would be a harmless backslash
 * and the "control char in header value" cases would test nothing.
 */
export function wireBytes(block: string): Buffer {
  const s = block
    .replace(/\n$/, '')
    .replace(/\\\n/g, '')
    .replace(/\n/g, '\r\n')
    .replace(/\\r/g, '\r')
    .replace(/\\n/g, '\n')
    .replace(/\\t/g, '\t')
    .replace(/\\f/g, '\f')
    .replace(/\\x([0-9a-fA-F]+)/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
    .replace(/\\([0-7]{1,3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))
  // UTF-8, as upstream sends it (`Düsseldorf` is 11 bytes in the expected log).
  return Buffer.from(s, 'utf8')
}

export function parseFixtureFile(file: string): LlhttpCase[] {
  const text = readCorpus(`llhttp-request-fixtures/${file}`, 'utf8').split('\n')
  const cases: LlhttpCase[] = []
  const headings: string[] = []
  for (let i = 0; i < text.length; i++) {
    const line = text[i] as string
    if (i + 1 < text.length && /^=+$/.test(text[i + 1] as string) && line.trim() !== '') {
      headings.length = 0
      headings[0] = line.trim()
      continue
    }
    const h = /^(#{2,4}) (.*)$/.exec(line)
    if (h) {
      const depth = (h[1] as string).length - 1
      headings.length = depth
      headings[depth] = (h[2] as string).trim()
      continue
    }
    const m = /^<!-- meta=(\{.*\}) -->$/.exec(line)
    if (!m) continue
    const meta = JSON.parse(m[1] as string) as LlhttpCase['meta']
    let j = i + 1
    while (text[j] !== '```http') j++
    const http: string[] = []
    for (j++; text[j] !== '```'; j++) http.push(text[j] as string)
    while (text[j] !== '```log') j++
    const log: string[] = []
    for (j++; text[j] !== '```'; j++) log.push(text[j] as string)
    i = j
    cases.push(describeCase(file, headings.filter(Boolean).join(' › '), meta, http, log))
  }
  return cases
}

function describeCase(
  file: string,
  title: string,
  meta: LlhttpCase['meta'],
  http: string[],
  log: string[],
): LlhttpCase {
  const bytes = wireBytes(http.map((l) => `${l}\n`).join(''))
  const errorAt = log.findIndex((l) => /\berror code=/.test(l))
  const upToError = errorAt < 0 ? log : log.slice(0, errorAt)
  const events = log.filter((l) => !/\b(finish=|pause)\b/.test(l))
  const last = events[events.length - 1] ?? ''
  const lastBegin = upToError.map((l) => / message begin$/.test(l)).lastIndexOf(true)
  const messageStarts = log
    .map((l) => /^off=(\d+) message begin$/.exec(l))
    .filter((x): x is RegExpExecArray => x !== null)
    .map((x) => Number(x[1]))
  // skipBody: llhttp was told to skip the body, so the rest of the input that its
  // log parses as further messages is, for a server, the first message's body.
  const skipBody = meta.skipBody === true
  return {
    file,
    title,
    meta,
    bytes,
    log,
    error: errorAt >= 0,
    errorReason: errorAt < 0 ? undefined : /reason="(.*)"/.exec(log[errorAt] ?? '')?.[1],
    lenient: meta.type.startsWith('request-lenient'),
    completeBeforeError: skipBody ? 0 : upToError.filter((l) => / message complete$/.test(l)).length,
    messageStarts: skipBody ? messageStarts.slice(0, 1) : messageStarts,
    errorInBody: errorAt >= 0 && upToError.slice(lastBegin).some((l) => / headers complete /.test(l)),
    incomplete: skipBody || (errorAt < 0 && !/ message complete$|\breset$/.test(last)),
    hasHost: log.some((l) => /span\[header_field\]="host"/i.test(l)),
  }
}

export const fixtureFiles = (): string[] =>
  readdirSync(DIR)
    .filter((f) => f.endsWith('.md') && f !== 'README.md')
    .sort()

export const loadFixtures = (): LlhttpCase[] => fixtureFiles().flatMap(parseFixtureFile)

/**
 * The case with `Host: localhost` added after the request line of every message
 * the log shows, or `undefined` when that cannot be done without changing what the
 * case is about: the input names a Host already, a request line does not end in
 * CRLF (bare-LF and bare-CR cases), or the next line starts with whitespace (the
 * added field would become the one being folded).
 */
export function withHost(c: LlhttpCase): Buffer | undefined {
  if (c.hasHost || c.messageStarts.length === 0) return undefined
  const host = Buffer.from('Host: localhost\r\n', 'latin1')
  const cuts: number[] = []
  for (const start of c.messageStarts) {
    const lf = c.bytes.indexOf(0x0a, start)
    if (lf < 0) return undefined
    const line = c.bytes.subarray(start, lf)
    if (line.indexOf(0x0d) !== line.length - 1) return undefined
    const next = c.bytes[lf + 1]
    if (next === 0x20 || next === 0x09) return undefined
    cuts.push(lf + 1)
  }
  const parts: Buffer[] = []
  let at = 0
  for (const cut of cuts) {
    parts.push(c.bytes.subarray(at, cut), host)
    at = cut
  }
  parts.push(c.bytes.subarray(at))
  return Buffer.concat(parts)
}
