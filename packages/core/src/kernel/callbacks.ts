/**
 * User callbacks (every option that is a function) run inside the host's
 * process, on its requests, its upgrades and its timers. One that throws must
 * never become an uncaught exception there: each is wrapped once, at
 * construction, so that whatever it throws reaches Aegis as a `CallbackError`
 * naming the option, which the pipeline turns into a 500 problem+json (or a
 * refused socket on an upgrade) and logs once.
 */
import { AegisError, ErrorCodes } from './errors.js'
import type { Logger } from './logger.js'
import { problem } from './problem.js'
import type { Rejection } from './types.js'

/**
 * A user callback threw, returned a promise where a value was expected, or
 * broke its contract. `callback` is the option's path (`limiter.key`).
 *
 * @example
 * if (err instanceof CallbackError) logger.error({ callback: err.callback }, err.message)
 */
export class CallbackError extends AegisError {
  readonly callback: string

  constructor(callback: string, message: string, cause?: unknown) {
    super(ErrorCodes.CALLBACK_FAILED, `${callback} ${message}`, { status: 500, cause })
    this.name = 'CallbackError'
    this.callback = callback
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return AegisError.is(value) && value.code === ErrorCodes.CALLBACK_FAILED && 'callback' in value
  }
}

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'

const ignore = (): void => {}

/**
 * Wrap a synchronous user callback: a throw becomes a `CallbackError` naming
 * `name`; a promise returned where a value is expected is refused the same way
 * (and its rejection handled, so that it cannot surface as an unhandled
 * rejection later). Three fixed parameters rather than a rest parameter: the
 * limiter's `key` and `cost` run on every request, and this adds no allocation.
 *
 * @example
 * const key = guardCallback('limiter.key', options.key)
 */
export function guardCallback<F extends (...args: never[]) => unknown>(name: string, f: F): F {
  const call = f as unknown as (a: unknown, b: unknown, c: unknown) => unknown
  return function guarded(this: unknown, a: unknown, b: unknown, c: unknown): unknown {
    let result: unknown
    let thenable: boolean
    try {
      result = call.call(this, a, b, c)
      // Inside the try: a result whose `then` getter throws (a revoked Proxy) is the callback's failure too.
      thenable = isThenable(result)
    } catch (err) {
      throw new CallbackError(name, 'threw', err)
    }
    if (thenable) {
      // Settle it quietly: an async function passed here rejects into nothing otherwise.
      Promise.resolve(result).then(ignore, ignore)
      throw new CallbackError(name, 'returned a promise; it must return its value synchronously')
    }
    return result
  } as unknown as F
}

/**
 * The user's logger, made unable to throw into Aegis: a logger that fails
 * (a closed destination, a serializer that throws) loses that line, never the
 * request, and never the process.
 *
 * @example
 * const logger = safeLogger(config.logger)
 */
export function safeLogger(logger: Logger | undefined): Logger | undefined {
  if (logger === undefined) return undefined
  const level =
    (name: 'info' | 'warn' | 'error' | 'debug') =>
    (obj: object, msg?: string): void => {
      try {
        logger[name]?.(obj, msg)
      } catch {
        // Nowhere left to report it: the logger is what failed.
      }
    }
  return {
    info: level('info'),
    warn: level('warn'),
    error: level('error'),
    ...(typeof logger.debug === 'function' ? { debug: level('debug') } : {}),
  }
}

/**
 * What a failed callback (or a bug of Aegis' own) is answered with: a 500
 * problem, logged once per callback and instance with its code — a key()
 * that throws on every malformed token must not flood the log; the
 * rejection counter (`reason="callback"` / `"internal"`) counts each one.
 *
 * @example
 * const failure = createFailureAnswers(logger)
 * try { ... } catch (err) { state.rejection = failure(err) }
 */
export function createFailureAnswers(logger: Logger | undefined): (err: unknown) => Rejection {
  const callbackFailed = problem({
    status: 500,
    code: ErrorCodes.CALLBACK_FAILED,
    reason: 'callback',
    title: 'Internal Server Error',
    detail: 'A callback of the server configuration failed.',
  })
  const internal = problem({
    status: 500,
    code: ErrorCodes.INTERNAL,
    reason: 'internal',
    title: 'Internal Server Error',
  })
  const reported = new Set<string>()
  return (err) => {
    const callback = err instanceof CallbackError ? err.callback : undefined
    const code = callback === undefined ? ErrorCodes.INTERNAL : ErrorCodes.CALLBACK_FAILED
    const once = callback ?? code
    if (!reported.has(once)) {
      reported.add(once)
      const message =
        callback === undefined
          ? 'Aegis failed on a request and answered 500 (a bug: please report it)'
          : `the ${callback} callback failed; requests it fails on are answered 500 (logged once)`
      if (logger !== undefined) logger.error({ err, code, callback }, message)
      else process.emitWarning(`${message}: ${String(err)}`, { code, type: 'AegisWarning' })
    }
    return callback === undefined ? internal : callbackFailed
  }
}
