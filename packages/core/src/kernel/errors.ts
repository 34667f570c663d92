/**
 * Error codes. Each has a section in docs/errors.md; rejection bodies link there.
 */
export const ErrorCodes = {
  CONFIG: 'AEGIS_ERR_CONFIG',
  CLOSED: 'AEGIS_ERR_CLOSED',
  METHOD_NOT_ALLOWED: 'AEGIS_ERR_METHOD_NOT_ALLOWED',
  BODY_TOO_LARGE: 'AEGIS_ERR_BODY_TOO_LARGE',
  HEADERS_TOO_LARGE: 'AEGIS_ERR_HEADERS_TOO_LARGE',
  BAD_FRAMING: 'AEGIS_ERR_BAD_FRAMING',
  BAD_HOST: 'AEGIS_ERR_BAD_HOST',
  HOST_NOT_ALLOWED: 'AEGIS_ERR_HOST_NOT_ALLOWED',
  PATH_TRAVERSAL: 'AEGIS_ERR_PATH_TRAVERSAL',
  BAD_PATH: 'AEGIS_ERR_BAD_PATH',
  VALIDATION: 'AEGIS_ERR_VALIDATION',
  CORS_ORIGIN: 'AEGIS_ERR_CORS_ORIGIN',
  BAD_REQUEST: 'AEGIS_ERR_BAD_REQUEST',
  REQUEST_TIMEOUT: 'AEGIS_ERR_REQUEST_TIMEOUT',
  LENIENT_PARSER: 'AEGIS_ERR_LENIENT_PARSER',
  RATE_LIMITED: 'AEGIS_ERR_RATE_LIMITED',
  CLIENT_DENIED: 'AEGIS_ERR_CLIENT_DENIED',
  ABNORMAL_USAGE: 'AEGIS_ERR_ABNORMAL_USAGE',
  LIMITER_UNAVAILABLE: 'AEGIS_ERR_LIMITER_UNAVAILABLE',
  OVERLOADED: 'AEGIS_ERR_OVERLOADED',
  UPSTREAM_UNAVAILABLE: 'AEGIS_ERR_UPSTREAM_UNAVAILABLE',
  UPSTREAM_TIMEOUT: 'AEGIS_ERR_UPSTREAM_TIMEOUT',
  NO_UPSTREAM: 'AEGIS_ERR_NO_UPSTREAM',
  BODY_CONSUMED: 'AEGIS_ERR_BODY_CONSUMED',
  FAULT_INJECTED: 'AEGIS_ERR_FAULT_INJECTED',
  TARGET_REFUSED: 'AEGIS_ERR_TARGET_REFUSED',
  CALLBACK_FAILED: 'AEGIS_ERR_CALLBACK_FAILED',
  INTERNAL: 'AEGIS_ERR_INTERNAL',
  UPGRADE_REFUSED: 'AEGIS_ERR_UPGRADE_REFUSED',
  INVALID_ARGUMENT: 'AEGIS_ERR_INVALID_ARGUMENT',
  NOT_FOUND: 'AEGIS_ERR_NOT_FOUND',
  ADMIN_TOKEN: 'AEGIS_ERR_ADMIN_TOKEN',
  ADMIN_ROLE: 'AEGIS_ERR_ADMIN_ROLE',
  ADMIN_HOST: 'AEGIS_ERR_ADMIN_HOST',
  ADMIN_ORIGIN: 'AEGIS_ERR_ADMIN_ORIGIN',
  ADMIN_CSRF: 'AEGIS_ERR_ADMIN_CSRF',
  ADMIN_BUSY: 'AEGIS_ERR_ADMIN_BUSY',
  ADMIN_PRECONDITION: 'AEGIS_ERR_ADMIN_PRECONDITION',
  ADMIN_NO_FILE: 'AEGIS_ERR_ADMIN_NO_FILE',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

/** Warning codes: emitted once per instance through the logger (or process.emitWarning). */
export const WarningCodes = {
  NO_REQUEST_TIMEOUT: 'AEGIS_WARN_NO_REQUEST_TIMEOUT',
  NO_HEADERS_TIMEOUT: 'AEGIS_WARN_NO_HEADERS_TIMEOUT',
  XFF_UNTRUSTED: 'AEGIS_WARN_XFF_UNTRUSTED',
  LENIENT_PARSER: 'AEGIS_WARN_LENIENT_PARSER',
  ONE_CLIENT: 'AEGIS_WARN_ONE_CLIENT',
  STORE_DOWN: 'AEGIS_WARN_STORE_DOWN',
  AUDIT_SINK_FAILED: 'AEGIS_WARN_AUDIT_SINK_FAILED',
  AUDIT_STORE_FAILED: 'AEGIS_WARN_AUDIT_STORE_FAILED',
  INVALID_REJECTION: 'AEGIS_WARN_INVALID_REJECTION',
  UPGRADE_UNROUTED: 'AEGIS_WARN_UPGRADE_UNROUTED',
} as const

export type WarningCode = (typeof WarningCodes)[keyof typeof WarningCodes]

const kAegisError = Symbol.for('aegis.error')

/**
 * Base of every error Aegis throws. Carries a stable `code`, the HTTP `status`
 * where it maps to one, and the `cause`. `AegisError.is(x)` (and `instanceof`)
 * work across two installed copies of the package because they test a
 * `Symbol.for` brand, as undici does.
 *
 * @example
 * try { createAegis({ validator: { maxBodyBytes: -1 } }) }
 * catch (err) { if (err instanceof AegisError) console.error(err.code) }
 */
export class AegisError extends Error {
  readonly code: ErrorCode
  readonly status: number | undefined

  constructor(code: ErrorCode, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'AegisError'
    this.code = code
    this.status = options.status
  }

  get [kAegisError](): true {
    return true
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return AegisError.is(value)
  }

  /** True for any AegisError, from this copy of the package or another. */
  static is(value: unknown): value is AegisError {
    return (
      typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kAegisError] === true
    )
  }
}

/**
 * A call of Aegis' run-time API with an argument it cannot take: a `TypeError`
 * (as Node's own `ERR_INVALID_ARG_*` are) that is also an `AegisError`, with a
 * stable `code` and the HTTP `status` an admin API answers it with —
 * `AEGIS_ERR_INVALID_ARGUMENT` (400), or `AEGIS_ERR_NOT_FOUND` (404) for a name
 * that names nothing (a limiter policy).
 *
 * @example
 * try { await limiter.get('203.0.113.7', 'nope') }
 * catch (err) { if (AegisError.is(err)) console.error(err.code, err.status) }
 */
export class AegisArgumentError extends TypeError {
  readonly code: typeof ErrorCodes.INVALID_ARGUMENT | typeof ErrorCodes.NOT_FOUND
  readonly status: number

  constructor(
    message: string,
    code: typeof ErrorCodes.INVALID_ARGUMENT | typeof ErrorCodes.NOT_FOUND = ErrorCodes.INVALID_ARGUMENT,
  ) {
    super(message)
    this.name = 'AegisArgumentError'
    this.code = code
    this.status = code === ErrorCodes.NOT_FOUND ? 404 : 400
  }

  get [kAegisError](): true {
    return true
  }
}

/**
 * One problem found in the options: the zod path, the message, the value received
 * (redacted). Issues found in a config file (`loadConfigFile`, `parseConfigText`) also
 * say where: the file (`source`) and the 1-based `line` and `column` of the node.
 */
export interface ConfigIssue {
  /** The option's path, dot-joined (`proxy.1.upstreams.0`); `''` for the root. */
  readonly path: string
  readonly message: string
  readonly received?: string
  /** The same path, one segment per key or index (keys may contain dots). */
  readonly segments?: readonly (string | number)[]
  /** The config file (or the name given for its text). */
  readonly source?: string
  readonly line?: number
  readonly column?: number
}

/**
 * Thrown by `createAegis()` (and the adapters) when the options are invalid.
 * `issues` lists every problem with its path; secrets are redacted.
 *
 * @example
 * try { createAegis({ validator: { maxBodyBytes: -1 } }) }
 * catch (err) { if (err instanceof AegisConfigError) console.error(err.issues) }
 */
export class AegisConfigError extends AegisError {
  readonly issues: readonly ConfigIssue[]

  constructor(issues: readonly ConfigIssue[], message?: string) {
    super(
      ErrorCodes.CONFIG,
      message ??
        `Invalid Aegis options:\n${issues
          .map(
            (i) =>
              `  - ${i.path || '(root)'}: ${i.message}${i.received === undefined ? '' : ` (received ${i.received})`}`,
          )
          .join('\n')}`,
    )
    this.name = 'AegisConfigError'
    this.issues = issues
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return AegisError.is(value) && value.code === ErrorCodes.CONFIG
  }
}
