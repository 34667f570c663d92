/**
 * What Aegis does with the HTTP servers it serves: their settings checked once,
 * parser errors answered with problem+json, CONNECT refused, WebSocket upgrades
 * admitted and handed to the engine owning them, requests shaped where V8 needs it,
 * and a graceful drain on `close()`.
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Engine } from '../kernel/engine.js'
import type { AdmittedState, HeaderList, Rejection } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import { writeSocketRejection } from '../node/socket.js'
import { shapeRequests, type ShapedRequests } from '../node/shape.js'
import { assertStrictParser, checkServer, createClientErrorHandler, type HttpServer } from './checks.js'

export type { HttpServer } from './checks.js'
export { checkServer, assertStrictParser, createClientErrorHandler, usesLenientParser } from './checks.js'

/** What the servers need from the pipeline. */
export interface HttpServerDeps {
  readonly warn: Warn
  /** Count a rejection by reason. */
  count: (reason: string) => void
  /** The fields every answer carries (security headers), in the generation in force. */
  baseHeaders: () => HeaderList
  /** Milliseconds a drain waits before closing what is left, in the generation in force. */
  closeTimeout: () => number
  /** The engines in force: those that take upgrades, answer CONNECT, end what drains cannot. */
  engines: () => readonly Engine[]
  admit: (req: IncomingMessage) => AdmittedState | Promise<AdmittedState>
  /** The handshake of an admitted upgrade is over: observe it (`status` 101, or what it was answered). */
  observe: (req: IncomingMessage, state: AdmittedState, status: number) => void
  /** The answer to a throw (counted). */
  failed: (err: unknown) => Rejection
  /** Shape the requests of servers met through a request (`AdapterHooks.shapeServers`). */
  readonly shapeMet: boolean
}

/** The servers of one Aegis instance. */
export interface HttpServers {
  /** Take charge of a server (see `Aegis.attach`). */
  attach(server: HttpServer, options: { drain: boolean; shapeRequests: boolean | undefined }): void
  /** A request arrived through `server`: check it once, and shape it when asked to. */
  met(server: HttpServer): void
  /** An engine now takes upgrades, or a reload changed the engines: attached servers follow. */
  upgradesChanged(): void
  /** Set once `close()` began: answers say `Connection: close`. */
  readonly draining: boolean
  /** Drain the servers attached with `drain`, stop shaping. */
  close(): Promise<void>
}

/**
 * @example
 * const servers = createHttpServers(deps)
 * servers.attach(server, { drain: true, shapeRequests: undefined })
 */
export function createHttpServers(deps: HttpServerDeps): HttpServers {
  // Read at each upgrade and CONNECT (rare): a reload swaps the engines.
  const upgraders = (): Engine[] =>
    deps.engines().filter((e) => e.ownsUpgrade !== undefined && e.upgrade !== undefined)
  const takesUpgrades = (): boolean => upgraders().some((e) => e.upgrades === true)
  const drained = new Set<HttpServer>()
  // Attached servers (once each), for engines that start taking upgrades later.
  const attached = new Set<HttpServer>()
  const checked = new WeakSet<object>()
  /** The request shaping of each server (attached, or met by a request), stopped on `close()`. */
  const shapes = new Map<HttpServer, { shaped: ShapedRequests; closed: () => void }>()
  let draining = false

  const shape = (server: HttpServer): void => {
    if (shapes.has(server)) return
    // A server closed for good (supertest makes one per request) keeps nothing here.
    const closed = (): void => unshape(server)
    shapes.set(server, { shaped: shapeRequests(server), closed })
    server.once('close', closed)
  }
  const unshape = (server: HttpServer): void => {
    const entry = shapes.get(server)
    if (entry === undefined) return
    shapes.delete(server)
    entry.shaped.stop()
    server.off('close', entry.closed)
  }

  // The answer to CONNECT is the first engine's that has one; none (no validator): the socket is dropped.
  const connect = (): Rejection | null | undefined =>
    deps.engines().find((e) => e.connect !== undefined)?.connect
  const refuseConnect = (_req: IncomingMessage, socket: Duplex): void => {
    const r = connect()
    if (r == null) return void socket.destroy()
    deps.count(r.reason)
    writeSocketRejection(socket, r, deps.baseHeaders())
  }

  /** Admit an upgrade request and hand it to the engine owning its path. */
  function onUpgrade(this: HttpServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // An event listener of the host's server: nothing may escape it (a throw here is an uncaught exception).
    try {
      upgrade(this, req, socket, head)
    } catch (err) {
      deps.failed(err)
      socket.destroy()
    }
  }
  function upgrade(server: HttpServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? '/'
    const owner = upgraders().find((e) => e.ownsUpgrade?.(url) === true)
    if (owner === undefined) {
      // Someone else's upgrade (a WebSocket server of the app), or nobody's: with us the only
      // listener, Node will not serve it as a plain request any more, so refuse it plainly.
      if (server.listenerCount('upgrade') === 1) socket.destroy()
      return
    }
    socket.on('error', () => socket.destroy())
    const proceed = (state: AdmittedState): void => {
      if (state.rejection !== undefined) {
        deps.observe(req, state, state.rejection.status)
        return writeSocketRejection(socket, state.rejection, state.headers)
      }
      const upgraded = owner.upgrade?.(req, socket, head, url) ?? false
      if (upgraded === false) {
        deps.observe(req, state, 404)
        return void socket.destroy() // the engine owned it a moment ago
      }
      upgraded.then(
        (status) => deps.observe(req, state, status ?? 101),
        (err: unknown) => {
          // A user callback of the route (router, balancer.hash) threw, or a bug of ours: 500 on the socket.
          deps.observe(req, state, 500)
          if (!socket.destroyed) writeSocketRejection(socket, deps.failed(err), state.headers)
          socket.destroy()
        },
      )
    }
    const admitted = deps.admit(req)
    if (!(admitted instanceof Promise)) return proceed(admitted)
    admitted.then(proceed).catch((err: unknown) => {
      deps.failed(err)
      socket.destroy()
    })
  }

  async function drain(server: HttpServer): Promise<void> {
    if (!server.listening) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.closeAllConnections()
        // Upgraded sockets (proxied WebSockets) are not among the connections Node closes above.
        for (const engine of deps.engines()) engine.endConnections?.()
      }, deps.closeTimeout())
      timer.unref()
      server.close(() => {
        clearTimeout(timer)
        resolve()
      })
      server.closeIdleConnections()
    })
  }

  const listenForUpgrades = (server: HttpServer): void => {
    // With a listener Node hands every `Upgrade` request (h2c too) to 'upgrade': add it only when needed.
    if (takesUpgrades() && !server.listeners('upgrade').includes(onUpgrade)) server.on('upgrade', onUpgrade)
  }

  return {
    attach(server, { drain: drains, shapeRequests: shaped }) {
      if (attached.has(server)) return
      assertStrictParser(server)
      attached.add(server)
      if (drains) drained.add(server)
      // Explicitly off also stops what a first request started (attach() called late).
      if (shaped === true) shape(server)
      else if (shaped === false) unshape(server)
      checked.add(server)
      checkServer(server, deps.warn)
      // Node writes a bare status line for parser errors only when nobody listens.
      if (server.listenerCount('clientError') === 0)
        server.on('clientError', createClientErrorHandler(deps.count, deps.baseHeaders()))
      listenForUpgrades(server)
      // Node hands CONNECT to 'connect' listeners and drops the socket when there are none.
      if (server.listenerCount('connect') === 0 && connect() !== null) server.on('connect', refuseConnect)
    },
    met(server) {
      if (checked.has(server)) return
      checked.add(server)
      checkServer(server, deps.warn)
      // An app that never calls attach(): shape from this request on (it runs once per server).
      if (deps.shapeMet && !draining) shape(server)
    },
    upgradesChanged() {
      for (const server of attached) {
        listenForUpgrades(server)
        // CONNECT refused in the generation now in force (a reload turned the validator on).
        if (server.listenerCount('connect') === 0 && connect() !== null) server.on('connect', refuseConnect)
      }
    },
    get draining() {
      return draining
    },
    async close() {
      draining = true
      await Promise.all([...drained].map(drain))
      drained.clear()
      attached.clear()
      for (const server of [...shapes.keys()]) unshape(server)
    },
  }
}
