/**
 * Requests for benchmarks that call `aegis.admit()` directly (no HTTP server).
 */

/**
 * What `admit()` reads of an IncomingMessage: method, url, headers and
 * rawHeaders (the validator), HTTP version, and the socket's address (client
 * identity). A fresh object per request: Aegis keeps its state on the request
 * and answers a second `admit()` of the same object from it.
 */
export const requestFrom = (remoteAddress) => ({
  method: 'GET',
  url: '/',
  headers: { host: 'bench.test' },
  rawHeaders: ['Host', 'bench.test'],
  httpVersion: '1.1',
  httpVersionMajor: 1,
  httpVersionMinor: 1,
  socket: { remoteAddress },
})

/** A plain loop: destructuring each `[name, value]` would cost more than admit() itself. */
export function hasHeader(state, name) {
  const headers = state.headers
  for (let i = 0; i < headers.length; i++) if (headers[i][0] === name) return true
  return false
}
