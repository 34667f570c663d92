/** One request on its own connection, for the ghost cache's tests. */
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'

export interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
  ms: number
}

/** One request on a fresh connection; a hang fails the test after `timeoutMs`. */
export function hit(
  port: number,
  path: string,
  {
    method = 'GET',
    headers = {},
    body,
    timeoutMs = 5000,
  }: { method?: string; headers?: OutgoingHttpHeaders; body?: string; timeoutMs?: number } = {},
): Promise<Reply> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
          ms: performance.now() - t0,
        }),
      )
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}
