/**
 * Real upstream servers on loopback for gateway tests: each records what
 * reached it and, by default, answers with a JSON echo of the request.
 */
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: IncomingMessage['headers']
  readonly rawHeaders: readonly string[]
  readonly bytes: number
}

export interface Upstream {
  readonly name: string
  readonly url: string
  readonly port: number
  /** Requests whose body was read in full, in arrival order. */
  readonly seen: Seen[]
  readonly server: Server
  /** Stop listening and cut every open connection (a crashed upstream does the same). */
  close(): Promise<void>
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => void

/** The default answer: 200 with `{ name, method, url, headers, bytes }`. */
const echo =
  (name: string): UpstreamHandler =>
  (_req, res, seen) => {
    res.setHeader('content-type', 'application/json')
    res.setHeader('x-upstream', name)
    res.end(JSON.stringify({ name, ...seen }))
  }

export async function startUpstream(
  name: string,
  handler?: UpstreamHandler,
  { port = 0 }: { port?: number } = {},
): Promise<Upstream> {
  const seen: Seen[] = []
  const sockets = new Set<Socket>()
  const answer = handler ?? echo(name)
  const server = createServer((req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => (bytes += chunk.length))
    req.on('end', () => {
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bytes,
      }
      seen.push(s)
      answer(req, res, s)
    })
  })
  server.keepAliveTimeout = 10_000
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  const actual = (server.address() as AddressInfo).port
  return {
    name,
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    seen,
    server,
    async close() {
      if (!server.listening) return
      const closed = once(server, 'close')
      server.close()
      for (const s of sockets) s.destroy()
      await closed
    },
  }
}

/** The URL of a loopback port nothing listens on any more: connections to it are refused. */
export async function refusedUrl(): Promise<string> {
  const gone = await startUpstream('gone')
  await gone.close()
  return gone.url
}
