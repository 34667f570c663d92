import { connect } from 'node:net'

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
