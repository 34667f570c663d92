import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createAegis, type Aegis, type AegisOptions, type Logger } from '@aegis/core'

/** What `startGateway()` needs: the options (from a file), where to listen, the logger. */
export interface GatewayOptions {
  readonly options: AegisOptions
  /** 0 picks a free port (the bound one is in `url`). */
  readonly port: number
  readonly host: string
  readonly logger: Logger
}

/** A gateway listening. */
export interface RunningGateway {
  /** `http://host:port` as bound (an IPv6 host in brackets). */
  readonly url: string
  readonly address: AddressInfo
  readonly aegis: Aegis
  readonly server: Server
  /** Drain and stop: `aegis.close()` (in-flight requests finish, up to `closeTimeout`). Idempotent. */
  close(): Promise<void>
}

/**
 * A standalone gateway: `createAegis(options)` in front of nothing but its own proxy
 * routes and endpoints, on a plain `node:http` server. What no route takes is a 404
 * problem+json (`aegis.handler()` without an app). Throws `AegisConfigError` on options
 * `createAegis()` refuses, and the listen error (`EADDRINUSE`, …) after closing Aegis.
 *
 * @example
 * const gw = await startGateway({ options, port: 8080, host: '127.0.0.1', logger })
 * // later: await gw.close()
 */
export async function startGateway(o: GatewayOptions): Promise<RunningGateway> {
  const aegis = createAegis({ ...o.options, logger: o.options.logger ?? o.logger })
  const server = createServer(aegis.handler())
  aegis.attach(server)
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(o.port, o.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    await aegis.close()
    throw err
  }
  // A server error after listening (EMFILE on accept) is logged, never thrown at the process.
  server.on('error', (err) => o.logger.error({ err }, 'server error'))
  const address = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: urlOf(address),
    address,
    aegis,
    server,
    close: () => (closing ??= aegis.close()),
  }
}

/** `http://host:port` of a bound address (an IPv6 host in brackets). */
export function urlOf(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `http://${host}:${address.port}`
}
