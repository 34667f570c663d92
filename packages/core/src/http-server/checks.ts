import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { AegisError, ErrorCodes, WarningCodes } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import type { HeaderList, Rejection } from '../kernel/types.js'
import type { Warn } from '../kernel/warnings.js'
import { writeSocketRejection } from '../node/socket.js'

export type HttpServer = Server<typeof IncomingMessage, typeof ServerResponse>

/**
 * Warn (once) about server settings that leave the door open: lenient parsing
 * (smuggling), `requestTimeout: 0` (Fastify's default) or `headersTimeout: 0`
 * (slowloris). For servers met through a request; `attach()` refuses lenient ones.
 */
export function checkServer(server: HttpServer, warn: Warn): void {
  if (usesLenientParser(server))
    warn(
      WarningCodes.LENIENT_PARSER,
      'The HTTP server parses leniently (insecureHTTPParser or --insecure-http-parser): request smuggling protection needs the strict parser. Remove that option.',
    )
  if (server.requestTimeout === 0)
    warn(
      WarningCodes.NO_REQUEST_TIMEOUT,
      'The HTTP server has no requestTimeout: a client can hold a request open forever (slowloris). Set requestTimeout (Fastify: requestTimeout option), e.g. 30000 ms.',
    )
  if (server.headersTimeout === 0)
    warn(
      WarningCodes.NO_HEADERS_TIMEOUT,
      "The HTTP server has no headersTimeout: a client can send headers one byte at a time forever. Keep Node's default (60000 ms) or lower.",
    )
}

// Process-wide flags do not change after start-up.
const LENIENT_PROCESS =
  process.execArgv.includes('--insecure-http-parser') ||
  (process.env.NODE_OPTIONS ?? '').split(/\s+/).includes('--insecure-http-parser')

/**
 * Lenient parsing (`insecureHTTPParser`, `--insecure-http-parser`) lets through
 * exactly the framing ambiguities request smuggling is made of; the hardening
 * checks assume Node's strict parser in front of them.
 */
export function usesLenientParser(server: HttpServer): boolean {
  return (server as { insecureHTTPParser?: boolean }).insecureHTTPParser === true || LENIENT_PROCESS
}

export function assertStrictParser(server: HttpServer): void {
  if (usesLenientParser(server))
    throw new AegisError(
      ErrorCodes.LENIENT_PARSER,
      'The HTTP server parses leniently (insecureHTTPParser or --insecure-http-parser): request smuggling protection needs the strict parser. Remove that option.',
    )
}

const clientErrors: Record<string, Rejection> = {
  timeout: problem({
    status: 408,
    code: ErrorCodes.REQUEST_TIMEOUT,
    reason: 'timeout',
    title: 'Request Timeout',
    headers: { connection: 'close' },
  }),
  headers: problem({
    status: 431,
    code: ErrorCodes.HEADERS_TOO_LARGE,
    reason: 'header-size',
    title: 'Request Header Fields Too Large',
    headers: { connection: 'close' },
  }),
  bad: problem({
    status: 400,
    code: ErrorCodes.BAD_REQUEST,
    reason: 'parse',
    title: 'Bad Request',
    detail: 'The request could not be parsed as HTTP/1.1 (RFC 9112).',
    headers: { connection: 'close' },
  }),
}

/**
 * A `clientError` handler: answer requests Node's parser refused with a
 * problem+json body instead of a bare status line (the statuses Node would use),
 * then close the connection.
 */
export function createClientErrorHandler(
  count: (reason: string) => void,
  headers: HeaderList = [],
): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    // A response already on the wire (the error came later, mid-body or in a
    // pipelined request): a second status line would answer the wrong request.
    const current = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage
    if (err.code === 'ECONNRESET' || !socket.writable || current?.headersSent === true) {
      socket.destroy()
      return
    }
    const r =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? clientErrors.timeout
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? clientErrors.headers
          : clientErrors.bad
    if (r === undefined) return
    count(r.reason)
    writeSocketRejection(socket, r, headers)
  }
}
