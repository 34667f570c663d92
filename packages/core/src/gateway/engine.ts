import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Engine } from '../kernel/engine.js'
import { AegisArgumentError, AegisConfigError, ErrorCodes } from '../kernel/errors.js'
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
import type { ForcedBreaker, RouteStatus, UpstreamChange, UpstreamStatus } from './status.js'

/**
 * The operator's view of the gateway and its controls (`aegis.gateway.status()`, …): every
 * proxy route — the `proxy` option's and those added by `proxy()` since — and each upstream's
 * state, and drain / enable / breaker holds on one upstream. Routes and upstreams are named as
 * `status()` names them (`RouteStatus.name`, `UpstreamStatus.upstream`); an unknown one throws
 * `AegisArgumentError` (`AEGIS_ERR_NOT_FOUND`, status 404). Where several routes share a name
 * (two `proxy()` at `/`) or a route lists one upstream twice, a control acts on all of them
 * and answers for the first. Controls act on this instance, and each is emitted on the bus
 * as `upstream.admin` (the audit trail, the logs and the live feed see it).
 */
export interface GatewayAdmin {
  /**
   * Every proxy route, longest prefix first, with each upstream's state. Plain JSON.
   *
   * @example
   * for (const route of aegis.gateway.status())
   *   for (const u of route.upstreams) console.log(route.name, u.upstream, u.admin, u.breaker?.state)
   */
  status(): RouteStatus[]
  /**
   * One upstream's state.
   *
   * @example
   * aegis.gateway.upstream('/api', 'http://10.0.0.5:8080').inflight
   */
  upstream(route: string, upstream: string): UpstreamStatus
  /**
   * Take an upstream out of rotation for new requests; those in flight finish (HAProxy's
   * `set server state drain`). Health checks go on. Holds until `enable()`.
   *
   * @example
   * const { before, after } = aegis.gateway.drain('/api', 'http://10.0.0.5:8080')
   */
  drain(route: string, upstream: string): UpstreamChange
  /**
   * Put a drained upstream back in rotation (HAProxy's `set server state ready`), with slow start.
   *
   * @example
   * aegis.gateway.enable('/api', 'http://10.0.0.5:8080')
   */
  enable(route: string, upstream: string): UpstreamChange
  /**
   * Hold an upstream's breaker `open` (no request reaches it: 503, or the ghost cache's
   * answer) or `closed` (every request may, whatever the failures), or lift the hold
   * (`auto`). Held on this instance only, even with `breaker.shared`: the shared-breaker
   * channel is pub/sub, which keeps nothing for an instance started later and may lose an
   * `auto`. Throws `AegisArgumentError` on a route without breakers.
   *
   * @example
   * aegis.gateway.forceBreaker('/api', 'http://10.0.0.5:8080', 'open')
   * aegis.gateway.forceBreaker('/api', 'http://10.0.0.5:8080', 'auto')
   */
  forceBreaker(route: string, upstream: string, state: ForcedBreaker): UpstreamChange
}

/** The gateway's own entry points (`aegis.gateway`, `aegis.proxy()`). */
export interface GatewayApi {
  /**
   * The routes of the `proxy` option, longest prefix first: the ones `forward` serves; and
   * the operator's view and controls over every route (`GatewayAdmin`).
   */
  readonly gateway: Gateway & GatewayAdmin
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
  const all = (): ProxyRoute[] =>
    [...gateway.routes, ...added].sort((a, b) => b.config.prefix.length - a.config.prefix.length)
  const named = (route: string): ProxyRoute[] => {
    if (typeof route !== 'string') throw new AegisArgumentError('gateway: the route is a string')
    const routes = all().filter((r) => (r.config.name ?? r.config.prefix) === route)
    if (routes.length === 0)
      throw new AegisArgumentError(
        `gateway: no proxy route named ${JSON.stringify(route)} (routes: ${all()
          .map((r) => JSON.stringify(r.config.name ?? r.config.prefix))
          .join(', ')})`,
        ErrorCodes.NOT_FOUND,
      )
    return routes
  }
  const unknownUpstream = (route: string, upstream: string, routes: ProxyRoute[]): AegisArgumentError =>
    new AegisArgumentError(
      `gateway: route ${JSON.stringify(route)} has no upstream ${JSON.stringify(upstream)} (upstreams: ${[
        ...new Set(routes.flatMap((r) => r.status().upstreams.map((u) => JSON.stringify(u.upstream)))),
      ].join(', ')})`,
      ErrorCodes.NOT_FOUND,
    )
  const control = (
    route: string,
    upstream: string,
    action: UpstreamChange['action'],
    breaker?: ForcedBreaker,
  ): UpstreamChange => {
    const routes = named(route)
    if (typeof upstream !== 'string') throw new AegisArgumentError('gateway: the upstream is a string')
    // Checked before anything changes: a control acts on every route of the name, or on none.
    if (routes.every((r) => !r.status().upstreams.some((u) => u.upstream === upstream)))
      throw unknownUpstream(route, upstream, routes)
    const changes = routes.flatMap((r) => r.control(upstream, action, breaker) ?? [])
    const first = changes[0] as UpstreamChange
    return changes.some((c) => c.changed) && !first.changed ? { ...first, changed: true } : first
  }
  const admin: GatewayAdmin = {
    status() {
      const routes = all()
      const count = new Map<string, number>()
      for (const r of routes) {
        const n = r.config.name ?? r.config.prefix
        count.set(n, (count.get(n) ?? 0) + 1)
      }
      return routes.map((r) => {
        const s = r.status()
        return { ...s, shared: (count.get(s.name) ?? 0) > 1 }
      })
    },
    upstream(route, upstream) {
      const routes = named(route)
      for (const r of routes) {
        const found = r.status().upstreams.find((u) => u.upstream === upstream)
        if (found !== undefined) return found
      }
      throw unknownUpstream(route, upstream, routes)
    },
    drain: (route, upstream) => control(route, upstream, 'drain'),
    enable: (route, upstream) => control(route, upstream, 'enable'),
    forceBreaker(route, upstream, state) {
      if (state !== 'open' && state !== 'closed' && state !== 'auto')
        throw new AegisArgumentError(
          `gateway: forceBreaker() takes 'open', 'closed' or 'auto', not ${JSON.stringify(state)}`,
        )
      const routes = named(route)
      const without = routes.find((r) => r.config.breaker === false)
      if (without !== undefined)
        throw new AegisArgumentError(
          `gateway: route ${JSON.stringify(route)} has no circuit breakers (breaker: false)`,
        )
      return control(route, upstream, 'force-breaker', state)
    },
  }
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    body: unknown,
  ): Promise<void> | false => gateway.handle(req, res, url, body)
  // What `aegis.gateway` is: the routes in force and the operator's controls (made again at a reload).
  let exposed: Gateway & GatewayAdmin = { ...gateway, ...admin }
  return {
    name: 'gateway',
    api: {
      get gateway() {
        return exposed
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
          exposed = { ...gateway, ...admin }
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
