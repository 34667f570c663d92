import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Engine } from '../kernel/engine.js'
import { AegisConfigError } from '../kernel/errors.js'
import { parseSection, SHARED_NEEDS_STORE } from '../options/index.js'
import { countGatewayEvents, logGatewayEvents } from './events.js'
import { underPrefix } from './prefix.js'
import { createGateway, gatewayOf, type Gateway } from './index.js'
import { sameValue } from '../kernel/equal.js'
import type { EngineUpdate } from '../pipeline/engines.js'
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

/** The gateway engine as the table builds it: a reload updates its routes in place. */
export interface GatewayEngine extends Engine {
  readonly api: GatewayApi
  /**
   * New routes for the `proxy` option, prepared off to the side: a route whose parsed options
   * are the same (`sameValue`) is kept with its pools, health checks, breakers and queue; the
   * others are built. `commit` swaps them in and hands back the closing of the routes dropped.
   * Routes added by `proxy()` belong to the code that added them: a reload keeps them.
   */
  reconfigure(configs: readonly ProxyRouteConfig[], defaults: RouteDefaults): EngineUpdate
  /** Whether `proxy()` added routes (they hold this generation's ghost hooks). */
  hasAddedRoutes(): boolean
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
export function gatewayEngine(configs: readonly ProxyRouteConfig[], deps: GatewayEngineDeps): GatewayEngine {
  // The logs and the metrics of the gateway's events listen on the bus, as the audit trail does.
  const unsubscribe = [
    deps.logger === undefined ? undefined : logGatewayEvents(deps.events, deps.logger),
    deps.metrics === undefined ? undefined : countGatewayEvents(deps.events, deps.metrics),
  ]
  let gateway = createGateway(configs, deps)
  let routeDefaults = deps.routeDefaults
  const added: ProxyRoute[] = []
  const addedUpgrades: ProxyRoute[] = []
  // Routes that take upgrades (the server's 'upgrade' event never passes a framework's router).
  let upgradeRoutes: ProxyRoute[] = [...gateway.routes]
  const byPrefix = (a: ProxyRoute, b: ProxyRoute): number => b.config.prefix.length - a.config.prefix.length
  const raise = (routes: readonly ProxyRoute[]): void => {
    for (const r of routes)
      if (r.config.maxBodyBytes !== undefined) deps.raiseBodyLimit(r.config.maxBodyBytes)
  }
  raise(gateway.routes)
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    body: unknown,
  ): Promise<void> | false => gateway.handle(req, res, url, body)
  return {
    name: 'gateway',
    api: {
      get gateway() {
        return gateway
      },
      proxy(options, { upgrades = true } = {}) {
        const config = parseSection(proxyRouteSchema, withRouteDefaults(options, routeDefaults), ['proxy'])
        if (!deps.storeConfigured && config.breaker !== false && config.breaker.shared)
          throw new AegisConfigError([{ path: 'proxy.breaker.shared', message: SHARED_NEEDS_STORE }])
        const route = createProxyRoute(config, deps)
        added.push(route)
        raise([route])
        if (upgrades) {
          addedUpgrades.push(route)
          upgradeRoutes = [...upgradeRoutes, route].sort(byPrefix)
          deps.upgradesChanged()
        }
        return route
      },
    },
    // Read when a generation's flow is composed: none while the `proxy` option has no route.
    get forward() {
      return gateway.routes.length === 0 ? undefined : forward
    },
    hasAddedRoutes: () => added.length > 0,
    reconfigure(next, defaults) {
      const left = [...gateway.routes]
      const routes = next.map((config) => {
        const i = left.findIndex((r) => sameValue(r.config, config))
        return i < 0 ? createProxyRoute(config, deps) : (left.splice(i, 1)[0] as ProxyRoute)
      })
      const built = routes.filter((r) => !gateway.routes.includes(r))
      return {
        commit() {
          gateway = gatewayOf(routes)
          routeDefaults = defaults
          upgradeRoutes = [...gateway.routes, ...addedUpgrades].sort(byPrefix)
          raise(built)
          deps.upgradesChanged()
          return left.length === 0
            ? undefined
            : async () => void (await Promise.all(left.map((r) => r.close())))
        },
        abort: async () => void (await Promise.all(built.map((r) => r.close()))),
      }
    },
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
