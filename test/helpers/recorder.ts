import type { Logger } from '@aegis/core'

/** A logger that keeps the errors it is given (and ignores info and warn). */
export const recorder = (): Logger & {
  errors: { obj: Record<string, unknown>; msg: string | undefined }[]
} => {
  const errors: { obj: Record<string, unknown>; msg: string | undefined }[] = []
  return {
    errors,
    info() {},
    warn() {},
    error(obj, msg) {
      errors.push({ obj: obj as Record<string, unknown>, msg })
    },
  }
}
