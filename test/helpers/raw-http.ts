import { connect, type Socket } from 'node:net'

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
  /** Everything the server sent, for framing checks. */
  raw: string
  /** How many responses the bytes hold (for pipelining checks). */
  responses: number
}

/**
 * Send bytes over a raw TCP socket and parse the first response. For requests
 * no HTTP client will send (smuggling gadgets, bad Host values). Bounded in time.
 */
export function rawRequest(
  port: number,
  bytes: string | Buffer,
  { timeoutMs = 3000, waitForClose = false }: { timeoutMs?: number; waitForClose?: boolean } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    const finish = (): void => {
      socket.destroy()
      const raw = Buffer.concat(chunks).toString('latin1')
      const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(raw)
      if (!m) return resolve({ status: 0, headers: {}, body: '', raw, responses: 0 })
      const headEnd = raw.indexOf('\r\n\r\n')
      const headers: Record<string, string> = {}
      for (const line of raw.slice(m[0].length, headEnd).split('\r\n')) {
        const i = line.indexOf(':')
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
      }
      let body = raw.slice(headEnd + 4)
      if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']))
      resolve({
        status: Number(m[1]),
        headers,
        body,
        raw,
        responses: raw.match(/^HTTP\/1\.[01] \d{3}/gm)?.length ?? 0,
      })
    }
    socket.setTimeout(timeoutMs, finish)
    socket.on('data', (d: Buffer) => {
      chunks.push(d)
      if (!waitForClose && complete(Buffer.concat(chunks).toString('latin1'))) finish()
    })
    socket.on('end', finish)
    socket.on('close', finish)
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? finish() : reject(err)))
    socket.write(bytes)
  })
}

function complete(raw: string): boolean {
  const headEnd = raw.indexOf('\r\n\r\n')
  if (headEnd < 0) return false
  const head = raw.slice(0, headEnd).toLowerCase()
  // No content whatever the fields say (RFC 9110 §6.4.1): a 304 may carry its 200's Content-Length.
  if (/^http\/1\.[01] (1\d\d|204|304)/.test(head)) return true
  const cl = /\r\ncontent-length:\s*(\d+)/.exec(head)
  if (cl) return raw.length - headEnd - 4 >= Number(cl[1])
  if (/\r\ntransfer-encoding:\s*chunked/.test(head)) return raw.endsWith('0\r\n\r\n')
  return false
}

/** One response of several parsed off a connection ({@link parseResponses}). */
export interface ParsedResponse {
  status: number
  headers: Record<string, string>
  body: string
}

/**
 * Split the bytes a connection received into its responses, in order: framed by
 * Content-Length or chunked coding (bodiless statuses and answers to HEAD have
 * none). Stops at the first incomplete response. `heads` names the requests'
 * methods in order, when some are HEAD.
 */
export function parseResponses(raw: string, heads: readonly string[] = []): ParsedResponse[] {
  const out: ParsedResponse[] = []
  let at = 0
  while (at < raw.length) {
    const headEnd = raw.indexOf('\r\n\r\n', at)
    if (headEnd < 0) break
    const lines = raw.slice(at, headEnd).split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
    if (!m) break
    const status = Number(m[1])
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':')
      if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
    }
    let next = headEnd + 4
    let body = ''
    const bodiless = status < 200 || status === 204 || status === 304 || heads[out.length] === 'HEAD'
    if (bodiless) {
      // No body.
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length'])
      if (raw.length - next < n) break
      body = raw.slice(next, next + n)
      next += n
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      let done = false
      while (!done) {
        const lineEnd = raw.indexOf('\r\n', next)
        if (lineEnd < 0) return out
        const size = parseInt(raw.slice(next, lineEnd), 16)
        if (Number.isNaN(size)) return out
        if (size === 0) {
          const end = raw.indexOf('\r\n\r\n', lineEnd)
          if (end < 0) return out
          next = end + 4
          done = true
        } else {
          if (raw.length < lineEnd + 2 + size + 2) return out
          body += raw.slice(lineEnd + 2, lineEnd + 2 + size)
          next = lineEnd + 2 + size + 2
        }
      }
    } else {
      // Delimited by the connection's close.
      body = raw.slice(next)
      next = raw.length
    }
    out.push({ status, headers, body })
    at = next
  }
  return out
}

/**
 * Open a connection, let `send` write to it (at its own pace), and collect
 * everything the server sends until it closes the connection, or `timeoutMs`.
 * `closed` says whether the server closed it (rather than the timeout).
 */
export function converse(
  port: number,
  send: (socket: Socket) => void | Promise<void>,
  { timeoutMs = 5000 }: { timeoutMs?: number } = {},
): Promise<{ raw: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    let closed = false
    const timer = setTimeout(() => socket.destroy(), timeoutMs)
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.on('end', () => (closed = true))
    socket.on('error', () => (closed = true))
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ raw: Buffer.concat(chunks).toString('latin1'), closed })
    })
    socket.once('connect', () => {
      Promise.resolve(send(socket)).catch(() => socket.destroy())
    })
  })
}

/** Write exactly `bytes` as one chunked body of `chunkSize`-byte chunks, waiting for drain; stops if the socket closes. */
export async function writeChunked(socket: Socket, bytes: number, chunkSize = 64 * 1024): Promise<void> {
  for (let sent = 0; sent < bytes && !socket.destroyed && socket.writable; sent += chunkSize) {
    const size = Math.min(chunkSize, bytes - sent)
    const frame = Buffer.concat([
      Buffer.from(`${size.toString(16)}\r\n`),
      Buffer.alloc(size, 97),
      Buffer.from('\r\n'),
    ])
    if (!socket.write(frame)) {
      await new Promise<void>((resolve) => {
        socket.once('drain', resolve)
        socket.once('close', resolve)
      })
    }
  }
  if (!socket.destroyed && socket.writable) socket.write('0\r\n\r\n')
}
