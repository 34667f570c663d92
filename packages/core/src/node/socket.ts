import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { HeaderList, Rejection } from '../kernel/types.js'

/*
 * Answers written straight onto a socket that no ServerResponse owns: a request
 * Node's parser refused (the server's `clientError`), an upgrade or CONNECT
 * Aegis refuses, an upstream's refusal of a proxied upgrade.
 */

/** Write a rejection straight onto a socket that no ServerResponse owns, and close it. */
export function writeSocketRejection(socket: Duplex, r: Rejection, extra: HeaderList = []): void {
  let fields = ''
  for (const [k, v] of extra) fields += `${k}: ${v}\r\n`
  for (const [k, v] of Object.entries(r.headers)) if (k !== 'connection') fields += `${k}: ${v}\r\n`
  endSocket(socket, rawResponse(r.status, fields, Buffer.from(r.body)))
}

/**
 * A complete HTTP/1.1 answer for a socket no ServerResponse owns: the status
 * line, `fields` (`name: value\r\n` lines), `Connection: close`, and the body
 * with its length (neither for 204 and 304, RFC 9110 §8.6).
 */
export function rawResponse(status: number, fields: string, body: Buffer): Buffer {
  const head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${fields}connection: close\r\n`
  if (status === 204 || status === 304) return Buffer.from(`${head}\r\n`, 'latin1')
  return Buffer.concat([Buffer.from(`${head}content-length: ${body.length}\r\n\r\n`, 'latin1'), body])
}

/** How long a socket given its last answer may wait for the client to close its side. */
const LINGER_MS = 5_000

/**
 * Write a last answer and close our side; destroy the socket if the client keeps
 * its side open (HTTP servers allow half-open sockets, and a socket taken from
 * Node's HTTP machinery has no timeout left).
 */
export function endSocket(socket: Duplex, data: Buffer): void {
  socket.end(data)
  if (socket.destroyed) return
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
}
