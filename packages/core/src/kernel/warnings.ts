import type { WarningCode } from './errors.js'
import type { Logger } from './logger.js'

export type Warn = (code: WarningCode, message: string) => void

/**
 * Warn once per code and instance: misconfiguration that only shows with
 * traffic is worth one line, not one per request. Through the logger when one
 * is given (pino's `(obj, msg)` order), else as a process warning.
 */
export function createWarnOnce(logger: Logger | undefined): Warn {
  const seen = new Set<WarningCode>()
  return (code, message) => {
    if (seen.has(code)) return
    seen.add(code)
    if (logger) logger.warn({ code }, message)
    else process.emitWarning(message, { code, type: 'AegisWarning' })
  }
}
