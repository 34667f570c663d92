/**
 * Shared plumbing for the corpus replays: where the corpora live, a raw TCP
 * client that reads every response a connection produces, a bounded-concurrency
 * pool and a health probe. The corpora are test fixtures kept in the repository,
 * under test/corpora/data/ (each folder with its licence file and a README naming
 * its source), so the replays run from any fresh clone.
 */
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'

/** test/corpora/data/, resolved from this file: never a path outside the repository. */
export const CORPORA = new URL('./data/', import.meta.url)

/** A corpus file as text; latin1 by default so that every byte maps to one char. */
export const readCorpus = (path: string, encoding: BufferEncoding = 'latin1'): string =>
  readFileSync(new URL(path, CORPORA), encoding)

/** Non-empty lines of a text corpus, CR stripped (the files use LF; the last line may lack one). */
export const corpusLines = (path: string): string[] =>
  readCorpus(path)
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.length > 0)

export interface WireResponse {
  status: number
  /** Header lines in order, names lower-cased, values trimmed. */
  headers: [string, string][]
  body: Buffer
  /** The response's framing ended inside the bytes received. */
  complete: boolean
}

export interface Exchange {
  /** Every byte the server sent, in order. */
  raw: Buffer
  responses: WireResponse[]
  /** Bytes after the last response that do not parse as one (should be empty). */
  trailing: Buffer
  /** The server closed (or reset) the connection before our deadline. */
  closed: boolean
}

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n/

/**
 * Split what a server sent into responses (RFC 9112 §6.3 framing: Content-Length,
 * chunked, or "until close" for a response with neither). `closed` says whether
 * the stream ended, which makes an until-close body complete.
 */
export function parseResponses(
  raw: Buffer,
  closed: boolean,
): { responses: WireResponse[]; trailing: Buffer } {
  const responses: WireResponse[] = []
  let at = 0
  while (at < raw.length) {
    const text = raw.subarray(at).toString('latin1')
    const m = STATUS_LINE.exec(text)
    const headEnd = text.indexOf('\r\n\r\n')
    if (m === null || headEnd < 0) break
    const headers: [string, string][] = []
    for (const line of text.slice(m[0].length, headEnd).split('\r\n')) {
      if (line === '') continue
      const i = line.indexOf(':')
      headers.push(
        i < 0 ? [line.toLowerCase(), ''] : [line.slice(0, i).toLowerCase(), line.slice(i + 1).trim()],
      )
    }
    const status = Number(m[1])
    const bodyStart = at + headEnd + 4
    const cl = headers.find(([n]) => n === 'content-length')?.[1]
    const te = headers.find(([n]) => n === 'transfer-encoding')?.[1]
    let body: Buffer
    let end: number
    let complete = true
    if (status < 200 || status === 204 || status === 304) {
      body = Buffer.alloc(0)
      end = bodyStart
    } else if (te !== undefined && /chunked\s*$/i.test(te)) {
      const parts: Buffer[] = []
      let p = bodyStart
      complete = false
      for (;;) {
        const lineEnd = raw.indexOf('\r\n', p, 'latin1')
        if (lineEnd < 0) break
        const size = parseInt(raw.subarray(p, lineEnd).toString('latin1'), 16)
        if (Number.isNaN(size)) break
        if (size === 0) {
          const trailerEnd = raw.indexOf('\r\n\r\n', lineEnd, 'latin1')
          if (trailerEnd >= 0) {
            p = trailerEnd + 4
            complete = true
          } else if (raw.subarray(lineEnd, lineEnd + 4).toString('latin1') === '\r\n\r\n') {
            p = lineEnd + 4
            complete = true
          }
          break
        }
        if (lineEnd + 2 + size + 2 > raw.length) break
        parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size))
        p = lineEnd + 2 + size + 2
      }
      body = Buffer.concat(parts)
      end = complete ? p : raw.length
    } else if (cl !== undefined) {
      end = Math.min(raw.length, bodyStart + Number(cl))
      complete = bodyStart + Number(cl) <= raw.length
      body = raw.subarray(bodyStart, end)
    } else {
      end = raw.length
      complete = closed
      body = raw.subarray(bodyStart)
    }
    responses.push({ status, headers, body, complete })
    at = end
    if (!complete) break
  }
  return { responses, trailing: raw.subarray(at) }
}

/**
 * Write `bytes` on a fresh connection to 127.0.0.1:`port` and collect everything
 * the server sends until it closes, `timeoutMs` passes, or `enough(responses)`
 * holds (checked on each arrival; used when the connection stays open).
 */
export function exchange(
  port: number,
  bytes: Buffer | string,
  { timeoutMs = 2000, enough }: { timeoutMs?: number; enough?: (r: WireResponse[]) => boolean } = {},
): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const raw = Buffer.concat(chunks)
      resolve({ raw, closed, ...parseResponses(raw, closed) })
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on('data', (d: Buffer) => {
      chunks.push(d)
      if (enough !== undefined) {
        const { responses } = parseResponses(Buffer.concat(chunks), false)
        if (enough(responses)) finish(false)
      }
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true)
      else if (!done) {
        done = true
        clearTimeout(timer)
        reject(err)
      }
    })
    socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes)
  })
}

/** Run `fn` over `items`, at most `concurrency` at a time; results keep the input order. */
export async function pool<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i] as T, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
  return results
}

/** A plain `GET /` on a new connection answers 2xx: the server survived what came before. */
export async function healthy(port: number): Promise<boolean> {
  const res = await exchange(port, 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
  const first = res.responses[0]
  return first !== undefined && first.complete && first.status >= 200 && first.status < 300
}

export const header = (res: WireResponse, name: string): string | undefined =>
  res.headers.find(([n]) => n === name)?.[1]
