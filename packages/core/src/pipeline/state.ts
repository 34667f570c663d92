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
 * a property added to one costs V8 a new map. One map per process, like the
 * symbol, so that every copy of this module (its ESM and CJS builds, two
 * installed versions) finds what another admitted.
 */
const kStates = Symbol.for('aegis.requestStates')
const besideRequest: StateSlots<unknown> = ((globalThis as { [kStates]?: WeakMap<IncomingMessage, unknown> })[
  kStates
] ??= new WeakMap<IncomingMessage, unknown>())

/**
 * The slots of one Aegis instance. A request passing several instances is
 * admitted once, however many copies of this module they come from; an
 * instance that keeps state beside requests and one that keeps it on them do
 * not see each other's (adapters choose one per framework).
 *
 * @example
 * const states = stateSlots<State>(false)
 * states.set(req, state)
 */
export const stateSlots = <S>(beside: boolean): StateSlots<S> =>
  (beside ? besideRequest : onRequest) as StateSlots<S>

/**
 * A request's state, wherever an instance keeps it: for accessors that expose
 * it to applications (Express' `req.aegis`).
 */
export const requestStateOf = <S>(req: IncomingMessage): S | undefined =>
  (besideRequest.get(req) ?? onRequest.get(req)) as S | undefined
