import type { IncomingMessage, ServerResponse } from 'node:http'
import type { HttpServer } from '../http-server/checks.js'

/**
 * Request shaping, for frameworks that re-prototype Node's request and
 * response objects (Express: `Object.setPrototypeOf(req, app.request)`).
 *
 * V8 gives an object a hidden class (map) per layout. On Node 20 and 22
 * (V8 11 and 12), a property added to an object after `Object.setPrototypeOf`
 * gets a map of its own that V8 does not cache: every Express request goes through a
 * handful of brand-new maps (`next`, `baseUrl`, `originalUrl`, `_parsedUrl`,
 * `route`, `params`, a router symbol, `res.locals`), and every property read
 * on it afterwards — by Express, Node's HTTP code, Aegis, the app — misses
 * V8's inline caches and looks the property up the slow way.
 *
 * The fix is to add those properties while the objects still have Node's own
 * cached layout: before the framework sees them, from a `request` listener
 * placed first, each holding what reading it gives anyway — `undefined`, or
 * a prototype's default (Node keeps `res.statusCode = 200` on
 * `ServerResponse.prototype`). Which ones is learned from the first
 * responses, among the names the framework and Node set themselves
 * ({@link FRAMEWORK_FIELDS}) and their symbols: the plain (writable,
 * enumerable, configurable) data properties the responses ended up with that
 * they did not arrive with, and that read the same through the prototypes the
 * object arrives with and those it ends with (a getter such as Express'
 * `req.query` is never shadowed). An application's own properties are never
 * added: code tests them with `in` (`if (!('user' in req))`). Then the
 * framework's writes land in existing fields, and each request keeps one
 * cached layout from start to end.
 *
 * The visible difference: a learned property is an own property before the
 * framework sets it (`Object.hasOwn(req, 'next')` is true earlier than it
 * would be). Values read are unchanged.
 */
export interface ShapeOptions {
  /** How many responses to learn from (their added properties are merged). Default 16. */
  readonly learnFrom?: number
  /**
   * The property names that may be learned (symbols always may: no code but
   * their owner can test for them). Default: what Express 5 and Node's HTTP
   * server add ({@link FRAMEWORK_FIELDS}). An application's own properties
   * (`req.user`) are never learned: code may test them with `in`.
   */
  readonly fields?: { readonly request: readonly string[]; readonly response: readonly string[] }
  /** At most this many properties each for requests and responses. Default 32. */
  readonly maxKeys?: number
}

/**
 * Whether this V8 makes a new layout for each re-prototyped object that gains
 * a property: V8 11 and 12 (Node 20 and 22) do, V8 13 (Node 24) caches it.
 */
export const REPROTOTYPING_IS_UNCACHED = Number(process.versions.v8.split('.')[0]) < 13

/** The names Express 5 (its router included) and Node's HTTP server add to a request and its response. */
export const FRAMEWORK_FIELDS = {
  request: ['res', 'next', 'baseUrl', 'originalUrl', '_parsedUrl', 'route', 'params', '_eventsCount'],
  response: ['locals', 'statusCode', 'statusMessage', '_eventsCount'],
} as const

/** What `shapeRequests()` learned so far: the property keys added, in order. */
export interface ShapedRequests {
  readonly request: readonly PropertyKey[]
  readonly response: readonly PropertyKey[]
  /** Stop shaping (removes the listener). */
  stop(): void
}

/**
 * Learn what a framework adds to `server`'s requests and responses, and add
 * it up front from then on.
 *
 * @example
 * const shape = shapeRequests(server)  // before or after the app's own listener
 * shape.request                        // e.g. ['res', 'next', 'baseUrl', …] after the first requests
 */
export function shapeRequests(server: HttpServer, options: ShapeOptions = {}): ShapedRequests {
  const { learnFrom = 16, maxKeys = 32, fields = FRAMEWORK_FIELDS } = options
  const request = createLearner(maxKeys, new Set(fields.request))
  const response = createLearner(maxKeys, new Set(fields.response))
  let learning = learnFrom

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    try {
      request.prepare(req)
      response.prepare(res)
    } catch {
      // A learned name became an accessor without a setter (or a setter threw) since: stop shaping,
      // leaving the request as it came; the framework's own write will meet the same accessor.
      stop()
      return
    }
    if (learning <= 0) return
    learning--
    const before = [request.snapshot(req), response.snapshot(res)] as const
    res.once('close', () => {
      request.learn(req, before[0])
      response.learn(res, before[1])
    })
  }
  const stop = (): void => {
    server.off('request', onRequest)
  }
  server.prependListener('request', onRequest)
  return { request: request.added, response: response.added, stop }
}

/** A writable data property (what a prototype may hold for a learned name). */
const isData = (d: PropertyDescriptor): boolean => 'value' in d && d.writable === true

/** What a plain assignment creates: writable, enumerable and configurable data. */
const isPlainData = (d: PropertyDescriptor | undefined): boolean =>
  d !== undefined && isData(d) && d.enumerable === true && d.configurable === true

/** What the objects of one kind (requests, or responses) are given up front: `added`, in order. */
function createLearner(maxKeys: number, names: ReadonlySet<string>) {
  const added: PropertyKey[] = []
  return {
    added,
    prepare(target: object): void {
      const fields = target as Record<PropertyKey, unknown>
      // The value read so far: `undefined`, or what a prototype holds (Node's `res.statusCode` is 200 there).
      for (let i = 0; i < added.length; i++) {
        const key = added[i] as PropertyKey
        if (Object.hasOwn(fields, key)) continue
        const inherited = fields[key]
        fields[key] = inherited
      }
    },
    /** The object as it arrives: its own keys and its prototype. */
    snapshot: (target: object): Snapshot => ({
      keys: new Set(Reflect.ownKeys(target)),
      proto: Object.getPrototypeOf(target) as object | null,
    }),
    learn(target: object, before: Snapshot): void {
      const proto = Object.getPrototypeOf(target) as object | null
      for (const key of Reflect.ownKeys(target)) {
        if (added.length >= maxKeys) return
        if (before.keys.has(key) || added.includes(key)) continue
        if (typeof key === 'string' && !names.has(key)) continue
        if (isPlainData(Object.getOwnPropertyDescriptor(target, key)) && inherits(before.proto, proto, key))
          added.push(key)
      }
    },
  }
}

interface Snapshot {
  readonly keys: ReadonlySet<PropertyKey>
  readonly proto: object | null
}

/**
 * Whether an own `key` set up front, holding what the prototypes of the
 * arriving object give, reads the same as no own `key` would, before and after
 * the framework re-prototypes the object: neither chain has it, or both give the
 * same plain value (never a getter, such as Express' `req.query`).
 */
function inherits(first: object | null, last: object | null, key: PropertyKey): boolean {
  const a = lookup(first, key)
  const b = lookup(last, key)
  if (a === undefined || b === undefined) return a === b
  return isData(a) && isData(b) && Object.is(a.value, b.value)
}

function lookup(proto: object | null, key: PropertyKey): PropertyDescriptor | undefined {
  for (let p = proto; p !== null; p = Object.getPrototypeOf(p) as object | null) {
    const d = Object.getOwnPropertyDescriptor(p, key)
    if (d !== undefined) return d
  }
  return undefined
}
