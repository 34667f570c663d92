import type { IncomingMessage, ServerResponse } from 'node:http'
import type { BodyTap, Engine, UpstreamHooks, UpstreamResponse } from '../kernel/engine.js'

type FailureHook = NonNullable<UpstreamHooks['onFailure']>
type RequestHook = NonNullable<UpstreamHooks['onRequest']>
type ResponseHook = NonNullable<UpstreamHooks['onResponse']>
type ReplaceHook = NonNullable<UpstreamHooks['replace']>
/** A hook that may answer on `res` itself (`onRequest`, `onFailure`). */
type Answering<A> = (req: IncomingMessage, res: ServerResponse, about: A) => boolean | Promise<boolean>

/** Ask `hooks` from `i` on until one answers: the gateway's own answer only when none does. */
function askInTurn<A>(
  hooks: readonly Answering<A>[],
  i: number,
  req: IncomingMessage,
  res: ServerResponse,
  failure: A,
): boolean | Promise<boolean> {
  for (; i < hooks.length; i++) {
    if (res.writableEnded || res.destroyed) return true
    // A hook started an answer and gave up: no other can finish it; the gateway cuts it.
    if (res.headersSent) return false
    const answered = (hooks[i] as Answering<A>)(req, res, failure)
    if (answered === true) return true
    if (answered instanceof Promise) {
      const next = i + 1
      return answered.then(
        (yes) => yes || askInTurn(hooks, next, req, res, failure),
        // One hook failing does not stop the next from answering; the gateway logs what the last one threw.
        () => askInTurn(hooks, next, req, res, failure),
      )
    }
  }
  return false
}

/** Several taps as one: each receives every chunk. */
const fanOut = (taps: readonly BodyTap[]): BodyTap => ({
  chunk: (data) => {
    for (const tap of taps) tap.chunk(data)
  },
  end: (complete) => {
    for (const tap of taps) tap.end(complete)
  },
})

/**
 * The gateway hooks of every engine, as one `UpstreamHooks` for the gateway: `onRequest`,
 * `onFailure` and `replace` ask each engine in table order until one answers; `onResponse` gathers their taps. A
 * member is absent when no engine has it, so the gateway pays nothing for it.
 *
 * @example
 * const hooks = composeUpstream(engines)
 */
export function composeUpstream(engines: readonly Engine[]): UpstreamHooks {
  const failing = engines.flatMap((e) => (e.upstream?.onFailure === undefined ? [] : [e.upstream.onFailure]))
  const answering = engines.flatMap((e) =>
    e.upstream?.onRequest === undefined ? [] : [e.upstream.onRequest],
  )
  const replacing = engines.flatMap((e) => (e.upstream?.replace === undefined ? [] : [e.upstream.replace]))
  const tapping = engines.flatMap((e) =>
    e.upstream?.onResponse === undefined ? [] : [e.upstream.onResponse],
  )
  const settling = engines.flatMap((e) => (e.upstream?.settled === undefined ? [] : [e.upstream.settled]))
  const hooks: {
    settled?: NonNullable<UpstreamHooks['settled']>
    onRequest?: RequestHook
    onFailure?: FailureHook
    replace?: ReplaceHook
    onResponse?: ResponseHook
  } = {}
  if (settling.length === 1) hooks.settled = settling[0] as NonNullable<UpstreamHooks['settled']>
  else if (settling.length > 1)
    hooks.settled = (route, outcome, ms) => {
      for (const hook of settling) hook(route, outcome, ms)
    }
  if (replacing.length === 1) hooks.replace = replacing[0] as ReplaceHook
  else if (replacing.length > 1)
    hooks.replace = (req, res, response) => askInTurn(replacing, 0, req, res, response)
  if (answering.length === 1) hooks.onRequest = answering[0] as RequestHook
  else if (answering.length > 1)
    hooks.onRequest = (req, res, request) => askInTurn(answering, 0, req, res, request)
  if (failing.length === 1) hooks.onFailure = failing[0] as FailureHook
  else if (failing.length > 1)
    hooks.onFailure = (req, res, failure) => askInTurn(failing, 0, req, res, failure)
  if (tapping.length === 1) hooks.onResponse = tapping[0] as ResponseHook
  else if (tapping.length > 1)
    hooks.onResponse = (req: IncomingMessage, response: UpstreamResponse) => {
      const taps = tapping.flatMap((hook) => hook(req, response) ?? [])
      return taps.length === 0 ? undefined : taps.length === 1 ? taps[0] : fanOut(taps)
    }
  return hooks
}
