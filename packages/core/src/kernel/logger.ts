/** A pino-compatible logger: `(object, message)` argument order. */
export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  debug?(obj: object, msg?: string): void
}
