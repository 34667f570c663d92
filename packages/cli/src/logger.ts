import { pino, type Logger as PinoLogger, type LevelWithSilent } from 'pino'
import pretty from 'pino-pretty'

/** How log lines are written: JSON (one object a line), pretty (for a person), or pretty when stdout is a terminal. */
export type LogFormat = 'auto' | 'json' | 'pretty'

export const LOG_LEVELS: readonly LevelWithSilent[] = [
  'trace',
  'debug',
  'info',
  'warn',
  'error',
  'fatal',
  'silent',
]

/**
 * The CLI's pino logger, also handed to `createAegis()` (warnings, access log).
 * Pretty printing runs in this thread, synchronously: no worker thread for a
 * transport, and nothing is lost when the process exits after a shutdown.
 *
 * @example
 * const logger = createLogger({ format: 'auto', level: 'info' })
 */
export function createLogger(options: {
  format: LogFormat
  level: LevelWithSilent
  /** Default: `process.stdout`'s terminal-ness. */
  tty?: boolean
}): PinoLogger {
  const prettyOut =
    options.format === 'pretty' || (options.format === 'auto' && (options.tty ?? process.stdout.isTTY))
  const base = { name: 'aegis', level: options.level }
  if (!prettyOut) return pino(base, pino.destination({ dest: 1, sync: true }))
  return pino(
    base,
    pretty({
      colorize: options.tty ?? process.stdout.isTTY,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name',
      singleLine: true,
      sync: true,
      destination: 1,
    }),
  )
}
