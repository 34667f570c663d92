import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Engine } from '../kernel/engine.js'
import { AegisConfigError } from '../kernel/errors.js'
import { parseSection, SHARED_NEEDS_STORE } from '../options/index.js'
import { countGatewayEvents, logGatewayEvents } from './events.js'
import { underPrefix } from './prefix.js'
import { createGateway, type Gateway } from './index.js'
import {
  proxyRouteSchema,
  withRouteDefaults,
  type ProxyRouteConfig,
  type ProxyRouteOptions,
  type RouteDefaults,
} from './options.js'
import { createProxyRoute, type GatewayDeps, type ProxyRoute } from './route.js'

/** The gateway's own entry points (`aegis.gateway`, `aegis.proxy()`). */
export interface GatewayApi {
  /** The routes of the `proxy` option, longest prefix first: the ones `forward` serves. */
  readonly gateway: Gateway
  /** One more route (`shield.proxy()`): throws `AegisConfigError` on bad options. */
  proxy(options: ProxyRouteOptions, use?: { upgrades?: boolean }): ProxyRoute
}

/** What the gateway engine needs beside the gateway's own dependencies. */
export interface GatewayEngineDeps extends GatewayDeps {
  /** The top-level settings a route added by `proxy()` inherits, as the routes of `proxy` did. */
  readonly routeDefaults: RouteDefaults
  /** Whether a shared store is configured (`breaker.shared` needs one). */
  readonly storeConfigured: boolean
  /** A route allows bodies up to `bytes` (the validator lets declared lengths up to it through). */
  raiseBodyLimit(bytes: number): void
  /** A route taking upgrades was added: attached servers must listen for them now. */
  upgradesChanged(): void
}

/**
 * The gateway as an engine: the routes of the `proxy` option take the admitted
 * requests under their prefixes before the app; every route taking upgrades (the
 * `proxy` option's, and `proxy()`'s unless told otherwise) takes the WebSocket
 * upgrades of attached servers.
 *
 * @example
 * const engine = gatewayEngine(config.proxy, deps)
 */
export function gatewayEngine(
  configs: readonly ProxyRouteConfig[],
  deps: GatewayEngineDeps,
): Engine & { readonly api: GatewayApi } {
  // The logs and the metrics of the gateway's events listen on the bus, as the audit trail does.
  const unsubscribe = [
    deps.logger === undefined ? undefined : logGatewayEvents(deps.events, deps.logger),
    deps.metrics === undefined ? undefined : countGatewayEvents(deps.events, deps.metrics),
  ]
  const gateway = createGateway(configs, deps)
  const added: ProxyRoute[] = []
  // Routes that take upgrades (the server's 'upgrade' event never passes a framework's router).
  const upgradeRoutes: ProxyRoute[] = [...gateway.routes]
  const raise = (routes: readonly ProxyRoute[]): void => {
    for (const r of routes)
      if (r.config.maxBodyBytes !== undefined) deps.raiseBodyLimit(r.config.maxBodyBytes)
  }
  raise(gateway.routes)
  return {
    name: 'gateway',
    api: {
      gateway,
      proxy(options, { upgrades = true } = {}) {
        const config = parseSection(proxyRouteSchema, withRouteDefaults(options, deps.routeDefaults), [
          'proxy',
        ])
        if (!deps.storeConfigured && config.breaker !== false && config.breaker.shared)
          throw new AegisConfigError([{ path: 'proxy.breaker.shared', message: SHARED_NEEDS_STORE }])
        const route = createProxyRoute(config, deps)
        added.push(route)
        raise([route])
        if (upgrades) {
          upgradeRoutes.push(route)
          upgradeRoutes.sort((a, b) => b.config.prefix.length - a.config.prefix.length)
          deps.upgradesChanged()
        }
        return route
      },
    },
    forward:
      gateway.routes.length === 0
        ? undefined
        : (req: IncomingMessage, res: ServerResponse, url: string, body: unknown) =>
            gateway.handle(req, res, url, body),
    claims: (url) => gateway.routes.some((r) => underPrefix(r.config.prefix, url) !== undefined),
    ownsUpgrade: (url) => upgradeRoutes.some((r) => underPrefix(r.config.prefix, url) !== undefined),
    upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, url: string) {
      const route = upgradeRoutes.find((r) => underPrefix(r.config.prefix, url) !== undefined)
      return route === undefined ? false : route.upgrade(req, socket, head, url)
    },
    get upgrades() {
      return upgradeRoutes.length > 0
    },
    endConnections() {
      for (const route of upgradeRoutes) route.endUpgrades()
    },
    async close() {
      await Promise.all([gateway.close(), ...added.map((r) => r.close())])
      for (const off of unsubscribe) off?.()
    },
  }
}
