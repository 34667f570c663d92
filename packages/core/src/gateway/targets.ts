/**
 * Run-time targets: upstreams a route's `router(req)` chooses per request. The
 * choice may be steered by the client, so the target is checked where it
 * counts — on the address the connection actually goes to. An IP literal is
 * checked before connecting (Node does not look those up); a name is checked
 * inside the `lookup` undici's connector calls for every new connection, on
 * every address it returns. Checking a name once and connecting later would
 * let DNS rebinding answer a public address to the check and 127.0.0.1 to the
 * connection; here there is no "later".
 */
import { CallbackError } from '../kernel/callbacks.js'
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns'
import type { Pool } from 'undici'
import type { ConnectionQueue } from './queue.js'
import { LRUCache } from 'lru-cache'
import { hostAddress, METADATA_NAMES, refusedTargetAddress } from './upstream-url.js'
import { parseRanges, inRanges, parseAddress } from '../client/index.js'
import { undici } from '../dependencies.js'

/** A `dns.lookup`-compatible function (tests stub it; apps may bring their own resolver). */
export type LookupFunction = typeof dnsLookup

/** The error a refused target fails with (`code`: `AEGIS_TARGET_REFUSED`). */
export class TargetRefusedError extends Error {
  override name = 'TargetRefusedError'
  readonly code = 'AEGIS_TARGET_REFUSED'
}

export interface TargetGuard {
  /** The target URL, or a `TargetRefusedError` saying why it may not be used. */
  check(target: string | URL): URL | TargetRefusedError
  /**
   * The keep-alive pool for a checked target's origin and the queue handing out its
   * connections (bounded; least recently used closed first).
   */
  poolFor(url: URL): { pool: Pool; queue: ConnectionQueue }
  close(): Promise<void>
}

export function createTargetGuard(options: {
  allow: readonly string[]
  lookup: LookupFunction | undefined
  connectTimeout: number
  connections: number
  keepAlive: number
  /** A connection queue for each target's pool. */
  queue: () => ConnectionQueue
}): TargetGuard {
  const allowed = parseRanges(options.allow)
  const permits = (addr: Parameters<typeof inRanges>[0]): boolean => inRanges(addr, allowed)
  const refusal = (address: string): string | undefined => {
    const addr = parseAddress(address)
    return addr === undefined ? `${address} is not an IP address` : refusedTargetAddress(addr, permits)
  }
  const resolve = options.lookup ?? dnsLookup

  // Every address a connection may use is checked: one refused address refuses the name.
  const guardedLookup = ((hostname: string, opts: LookupOptions, callback: (...args: unknown[]) => void) => {
    // A user's `lookup` that throws fails this connection (a 502), never the connector that called it.
    try {
      lookupChecked(hostname, opts, callback)
    } catch (err) {
      callback(new CallbackError('proxy.lookup', 'threw', err))
    }
  }) as unknown as LookupFunction
  const lookupChecked = (
    hostname: string,
    opts: LookupOptions,
    callback: (...args: unknown[]) => void,
  ): void => {
    resolve(hostname, { ...opts }, ((
      err: NodeJS.ErrnoException | null,
      address: string | LookupAddress[],
      family?: number,
    ) => {
      if (err) return callback(err)
      const list = Array.isArray(address) ? address.map((a) => a.address) : [address]
      for (const a of list) {
        const why = refusal(a)
        if (why !== undefined) return callback(new TargetRefusedError(`${hostname} resolved to ${why}`))
      }
      callback(null, address, family)
    }) as never)
  }

  const pools = new LRUCache<string, { pool: Pool; queue: ConnectionQueue }>({
    max: 256,
    dispose: ({ pool }, _origin, reason) => {
      if (reason === 'evict') void pool.close().catch(() => undefined)
    },
  })

  return {
    check(target) {
      let url: URL
      try {
        url = typeof target === 'string' ? new URL(target) : target
      } catch {
        return new TargetRefusedError('not a valid URL')
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        return new TargetRefusedError(`${url.protocol} is not http: or https:`)
      if (url.username !== '' || url.password !== '')
        return new TargetRefusedError('credentials in a target URL')
      const name = url.hostname.toLowerCase().replace(/\.$/, '')
      if (METADATA_NAMES.has(name)) return new TargetRefusedError(`${name} is a cloud metadata host`)
      const addr = hostAddress(url.hostname)
      const why = addr === undefined ? undefined : refusedTargetAddress(addr, permits)
      return why === undefined ? url : new TargetRefusedError(why)
    },
    poolFor(url) {
      let entry = pools.get(url.origin)
      if (entry === undefined) {
        const pool = new (undici().Pool)(url.origin, {
          connections: options.connections,
          keepAliveTimeout: options.keepAlive,
          pipelining: 1,
          connect: { timeout: options.connectTimeout, lookup: guardedLookup },
        })
        entry = { pool, queue: options.queue() }
        pools.set(url.origin, entry)
      }
      return entry
    },
    async close() {
      const all = [...pools.values()]
      pools.clear()
      await Promise.all(
        all.map(({ pool, queue }) => {
          queue.clear()
          return pool.close().catch(() => undefined)
        }),
      )
    },
  }
}
