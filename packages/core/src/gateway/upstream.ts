/**
 * The upstreams of a route: where a request goes (a keep-alive undici pool and
 * the URL parts a request is built from), and how an exchange with one counts
 * for the balancer and its breaker.
 */
import type { Dispatcher, Pool } from 'undici'
import type { Outcome, UpstreamHost } from '../balancer/index.js'
import type { Metrics, UpstreamSeries } from '../metrics/index.js'
import { isConnectFailure, isTimeout } from './answers.js'
import type { ExchangeOutcome } from './forward.js'
import type { ProxyRouteConfig } from './options.js'
import { undici } from '../dependencies.js'
import { ConnectionQueue } from './queue.js'

/** A URL's path without its trailing slash (`''` for `/`): what a forwarded path is appended to. */
export const basePathOf = (url: URL): string => url.pathname.replace(/\/+$/, '')

/** Where a request goes: a keep-alive pool, and the URL parts a request to it is built from. */
export interface Destination {
  readonly pool: Dispatcher
  readonly origin: string
  /** The URL's path without its trailing slash (`''` for `/`). */
  readonly basePath: string
  readonly host: string
  /** Hands out the pool's connections; requests wait here, bounded, rather than in undici. */
  readonly queue: ConnectionQueue
}

/** The destination parts of `url`, for requests through `pool` (connections handed out by `queue`). */
export const destinationOf = (url: URL, pool: Dispatcher, queue: ConnectionQueue): Destination => ({
  pool,
  queue,
  origin: url.origin,
  basePath: basePathOf(url),
  host: url.host,
})

/** One upstream of a route: its pool, where requests go, and the balancer's view of it. */
export class Upstream implements Destination {
  readonly origin: string
  /** The URL's path without its trailing slash (`''` for `/`). */
  readonly basePath: string
  readonly host: string
  readonly pool: Pool
  readonly queue: ConnectionQueue
  /** Metrics of this upstream (a no-op without metrics). */
  readonly series: UpstreamSeries | undefined

  constructor(
    readonly url: URL,
    readonly state: UpstreamHost,
    route: ProxyRouteConfig,
    metrics: Metrics | undefined,
  ) {
    this.origin = url.origin
    this.basePath = basePathOf(url)
    this.host = url.host
    this.series = metrics?.upstream(route.name ?? route.prefix, state.id)
    this.queue = queueFor(route)
    this.pool = new (undici().Pool)(url.origin, {
      connections: route.connections,
      keepAliveTimeout: route.keepAlive,
      pipelining: 1,
      connect: {
        timeout: route.timeouts.connect,
        ...(url.protocol === 'https:' && route.tls !== undefined ? route.tls : {}),
      },
    })
  }
}

/** The connection queue of one pool of `route`. */
export const queueFor = (route: Pick<ProxyRouteConfig, 'connections' | 'maxPending' | 'timeouts'>) =>
  new ConnectionQueue(route.connections, route.maxPending, route.timeouts.queue)

/**
 * How the balancer and the breaker count an exchange. A timeout or a reset while
 * the client had not sent its whole request yet (a stalled upload) says nothing
 * about the upstream: it counts for nothing.
 */
export function classify(o: ExchangeOutcome, requestComplete: boolean): Outcome {
  if (o.clientAborted) return 'cancelled'
  if (o.held || (o.responded && o.status >= 500)) return 'server-error'
  if (o.error === undefined) return 'success'
  if (isConnectFailure(o.error)) return 'connect-error'
  if (!requestComplete) return 'cancelled'
  return isTimeout(o.error) ? 'timeout' : 'error'
}
