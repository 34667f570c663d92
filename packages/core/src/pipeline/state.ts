import type { IncomingMessage } from 'node:http'

/** Where each request's state lives, found from the request. */
export interface StateSlots<S> {
  get(req: IncomingMessage): S | undefined
  set(req: IncomingMessage, state: S): void
}

const kState = Symbol.for('aegis.requestState')
type WithState = IncomingMessage & { [kState]?: unknown }

/** A symbol property of the request: the cheapest lookup where request objects share a hidden class. */
const onRequest: StateSlots<unknown> = {
  get: (req) => (req as WithState)[kState],
  set: (req, state) => {
    ;(req as WithState)[kState] = state
  },
}

/**
 * Beside the request, in a WeakMap: for frameworks whose request objects each
 * get a hidden class of their own (Express re-prototypes every request), where
 * a property added to one costs V8 a new map.
 */
const besideRequest: StateSlots<unknown> = new WeakMap<IncomingMessage, unknown>()

/**
 * The slots of one Aegis instance. Instances of this module share them, so a
 * request is admitted once however many instances it passes.
 *
 * @example
 * const states = stateSlots<State>(false)
 * states.set(req, state)
 */
export const stateSlots = <S>(beside: boolean): StateSlots<S> =>
  (beside ? besideRequest : onRequest) as StateSlots<S>
