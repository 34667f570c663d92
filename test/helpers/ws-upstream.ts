/**
 * A real WebSocket upstream (the `ws` package) on loopback, for the gateway's
 * upgrade tests: `onConnection` says what each accepted socket does.
 */
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'

export interface WsUpstream {
  readonly server: WebSocketServer
  /** `http://127.0.0.1:<port>`, as a proxy route's upstream. */
  readonly url: string
  /** Terminate every client and stop listening. */
  close(): Promise<void>
}

export async function startWsUpstream(onConnection: (socket: WebSocket) => void): Promise<WsUpstream> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(server, 'listening')
  server.on('connection', onConnection)
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      for (const c of server.clients) c.terminate()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
