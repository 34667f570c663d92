import { IncomingMessage } from 'node:http'
import type { Request } from 'express'
import { requestStateOf, type AegisRequestState } from '@aegis/core'

/**
 * Express re-prototypes every request, which leaves each request object with a hidden class of its
 * own: every property added to one costs V8 a new map. So `req.aegis` is an accessor, defined once on
 * the prototype just above `IncomingMessage.prototype` that every Express app of this copy of Express
 * inherits from, reading the state core keeps beside the request. It is not an own property:
 * `Object.keys(req)` and `{ ...req }` leave it out. `false` for a request that is not Express'.
 */
const exposed = new WeakSet<object>()
export function exposeState(req: Request): boolean {
  const first = Object.getPrototypeOf(req) as object | null
  if (first !== null && exposed.has(first)) return true
  let proto = first
  while (proto !== null && Object.getPrototypeOf(proto) !== IncomingMessage.prototype)
    proto = Object.getPrototypeOf(proto) as object | null
  if (proto === null || first === null) return false // not an Express request
  if (!Object.hasOwn(proto, 'aegis'))
    Object.defineProperty(proto, 'aegis', {
      configurable: true,
      get: function (this: IncomingMessage) {
        return requestStateOf<AegisRequestState>(this)
      },
      set: function (this: IncomingMessage, value: unknown) {
        Object.defineProperty(this, 'aegis', { value, writable: true, configurable: true, enumerable: true })
      },
    })
  exposed.add(first)
  return true
}
