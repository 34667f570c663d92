/**
 * Body bytes counted as Node's HTTP parser delivers them, without reading the stream.
 * Why a trick: a `data` listener would put the stream in flowing mode before the app's
 * body parser reads it, and a counting Transform in front of the request would be one
 * more stream per request that every parser would have to be handed instead. Replacing
 * `push` on the watched request only (the bodies that need counting) costs one property
 * write, and none on requests with a known, small length.
 */
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'

interface Watch {
  limit: number
  seen: number
  exceeded: boolean
  onExceed: (req: IncomingMessage) => void
}

const kWatch = Symbol('aegis.bodyWatch')
type Watched = IncomingMessage & { [kWatch]?: Watch }

// eslint-disable-next-line @typescript-eslint/unbound-method -- called with the request as `this`
const push = Readable.prototype.push

/**
 * Count body bytes as Node's HTTP parser delivers them (`parserOnBody` calls
 * `req.push`), without reading the stream: whoever consumes the body — a body
 * parser, a proxy, nobody — is unaffected until the limit is crossed. Past it,
 * chunks are dropped (the rest of the upload drains into nothing while the 413
 * goes out) and `onExceed` runs once. One shared function, no closure per request.
 */
function countingPush(this: Watched, chunk: unknown, encoding?: BufferEncoding): boolean {
  const watch = this[kWatch]
  if (watch !== undefined) {
    // Past the limit nothing more reaches the reader, not even the end of the body: a
    // gateway streaming it upstream must not see it complete (truncated). The 413 closes
    // the connection, which ends the request for everyone.
    if (watch.exceeded) return true
    if (chunk !== null && chunk !== undefined) {
      watch.seen += (chunk as { length: number }).length
      if (watch.seen > watch.limit) {
        watch.exceeded = true
        watch.onExceed(this)
        return true
      }
    }
  }
  return push.call(this, chunk, encoding)
}

/**
 * Enforce `limit` on a request body of unknown length (chunked).
 *
 * @example
 * watchBodySize(req, 1_048_576, (req) => answer413(req))
 */
export function watchBodySize(
  req: IncomingMessage,
  limit: number,
  onExceed: (req: IncomingMessage) => void,
): void {
  const watched = req as Watched
  const existing = watched[kWatch]
  if (existing !== undefined) {
    existing.limit = limit
    return
  }
  watched[kWatch] = { limit, seen: 0, exceeded: false, onExceed }
  watched.push = countingPush
}

/** Change the limit of a watched request (a gateway route may allow larger uploads). */
export function setWatchedLimit(req: IncomingMessage, limit: number): boolean {
  const watch = (req as Watched)[kWatch]
  if (watch === undefined) return false
  watch.limit = limit
  return true
}
