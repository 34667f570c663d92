/**
 * The gateway: proxy routes that forward requests to pools of upstreams.
 * Works on Node's IncomingMessage / ServerResponse, so the three adapters share
 * it; each upstream of each route has its own undici keep-alive pool.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { ProxyRouteConfig } from './options.js'
import { createProxyRoute, type GatewayDeps, type ProxyRoute } from './route.js'
import type { ParsedBody } from './body.js'
// The gateway's events on the bus (declaration merging on AegisEvents): a module of declarations,
// imported for them, so that every program — and the bundled .d.ts — that sees the gateway sees them.
import './events.js'

export { proxyRouteSchema, proxySection, withRouteDefaults } from './options.js'
export type { ProxyRouteOptions, ProxyRouteConfig, ChaosOptions, RouteDefaults } from './options.js'
export {
  parseUpstreamUrl,
  refusedTargetAddress,
  refusedUpstreamAddress,
  hostAddress,
} from './upstream-url.js'
export { createProxyRoute } from './route.js'
export { createBreakerBus, type BreakerBus } from '../breaker/index.js'
export type { GatewayDeps, ProxyRoute, UpstreamEvent } from './route.js'
export { reserialize } from './body.js'
export type { ParsedBody } from './body.js'
export { underPrefix } from './prefix.js'

/** Several proxy routes; the longest matching prefix wins. */
export interface Gateway {
  readonly routes: readonly ProxyRoute[]
  /** Forward through the route owning `url`, or `false` when none does. */
  handle(req: IncomingMessage, res: ServerResponse, url: string, parsed?: ParsedBody): Promise<void> | false
  /** Proxy an upgrade through the route owning `url` (see `ProxyRoute.upgrade`), or `false` when none does. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, url: string): Promise<number> | false
  /** Close every upgraded connection (WebSocket) of every route now; see `ProxyRoute.endUpgrades()`. */
  endUpgrades(): void
  close(): Promise<void>
}

export function createGateway(configs: readonly ProxyRouteConfig[], deps: GatewayDeps): Gateway {
  return gatewayOf(configs.map((c) => createProxyRoute(c, deps)))
}

/** Routes already built as one gateway (a reload keeps the routes that did not change). */
export function gatewayOf(built: readonly ProxyRoute[]): Gateway {
  const routes = [...built].sort((a, b) => b.config.prefix.length - a.config.prefix.length)
  return {
    routes,
    handle(req, res, url, parsed) {
      for (const route of routes) {
        const handled = route.handle(req, res, url, parsed)
        if (handled !== false) return handled
      }
      return false
    },
    upgrade(req, socket, head, url) {
      for (const route of routes) {
        const handled = route.upgrade(req, socket, head, url)
        if (handled !== false) return handled
      }
      return false
    },
    endUpgrades() {
      for (const route of routes) route.endUpgrades()
    },
    async close() {
      await Promise.all(routes.map((r) => r.close()))
    },
  }
}
