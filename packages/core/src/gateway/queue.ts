/**
 * Requests waiting for a connection to one upstream (Envoy's pending queue,
 * HAProxy's `timeout queue`). undici queues a request without bound and
 * without a deadline when every connection of its pool is busy: clients that
 * stop reading their answers hold those connections, and every later request
 * of the route would wait for them with no answer. Here a request goes to
 * undici only while a connection is free; otherwise it waits in this queue,
 * at most `maxPending` of them and each at most `waitMs`, and is answered 503
 * at once past either bound.
 */

/** What a waiter watches to leave the queue when its client goes away (a response or a socket). */
interface Closable {
  on(event: 'close', listener: () => void): unknown
  off(event: 'close', listener: () => void): unknown
}

interface Waiter {
  readonly resolve: (granted: boolean) => void
  readonly client: Closable
  readonly onClose: () => void
  timer: NodeJS.Timeout | undefined
}

/** The connections of one upstream pool, handed out in arrival order. */
export class ConnectionQueue {
  /** Requests given a connection and not finished yet. */
  private active = 0
  private readonly waiting: Waiter[] = []

  constructor(
    /** The pool's connections. */
    private readonly connections: number,
    /** Most requests waiting at once (`0`: none wait). */
    private readonly maxPending: number,
    /** Longest wait for a connection, in ms. */
    private readonly waitMs: number,
  ) {}

  /** Requests holding a connection now. */
  get inUse(): number {
    return this.active
  }

  /** Requests waiting for a connection now. */
  get pending(): number {
    return this.waiting.length
  }

  /**
   * A connection for one request: `true` at once when one is free (nothing
   * allocated). Otherwise a promise: `true` once a connection is handed over,
   * `false` when the queue is full, the wait ran out, or `client` closed.
   * Every `true` must be given back with `release()`.
   */
  acquire(client: Closable): true | Promise<boolean> {
    if (this.active < this.connections) {
      this.active++
      return true
    }
    if (this.waiting.length >= this.maxPending) return Promise.resolve(false)
    return new Promise((resolve) => {
      const waiter: Waiter = {
        resolve,
        client,
        onClose: () => this.leave(waiter),
        timer: undefined,
      }
      waiter.timer = setTimeout(() => this.leave(waiter), this.waitMs).unref()
      client.on('close', waiter.onClose)
      this.waiting.push(waiter)
    })
  }

  /** Give a connection back: to the longest waiting request, or to the pool. */
  release(): void {
    const next = this.waiting.shift()
    if (next === undefined) {
      this.active = Math.max(0, this.active - 1)
      return
    }
    clearTimeout(next.timer)
    next.client.off('close', next.onClose)
    next.resolve(true)
  }

  /** Refuse every waiting request (the route is closing). */
  clear(): void {
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer)
      w.client.off('close', w.onClose)
      w.resolve(false)
    }
  }

  /** A waiter gives up: its wait ran out, or its client went away. */
  private leave(waiter: Waiter): void {
    const i = this.waiting.indexOf(waiter)
    if (i < 0) return
    this.waiting.splice(i, 1)
    clearTimeout(waiter.timer)
    waiter.client.off('close', waiter.onClose)
    waiter.resolve(false)
  }
}
