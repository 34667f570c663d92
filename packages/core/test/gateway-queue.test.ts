/**
 * The connection queue of a gateway pool (issue 14, finding 4): connections
 * handed out in arrival order, waiting bounded in number and in time, a
 * waiter whose client leaves gives up its place.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { ConnectionQueue } from '../src/gateway/queue.js'

describe('ConnectionQueue', () => {
  it('grants at once while a connection is free, then queues in arrival order', async () => {
    const q = new ConnectionQueue(2, 10, 10_000)
    const client = new EventEmitter()
    expect(q.acquire(client)).toBe(true)
    expect(q.acquire(client)).toBe(true)
    const order: number[] = []
    const waits = [1, 2, 3].map((n) =>
      (q.acquire(client) as Promise<boolean>).then((ok) => ok && order.push(n)),
    )
    expect(q.pending).toBe(3)
    q.release()
    q.release()
    q.release()
    await Promise.all(waits)
    expect(order).toEqual([1, 2, 3])
    expect(client.listenerCount('close')).toBe(0)
    // Two of the five holders are left (the last two waiters): once they release, both slots are free again.
    q.release()
    q.release()
    expect(q.acquire(client)).toBe(true)
    expect(q.acquire(client)).toBe(true)
    expect(q.acquire(client)).not.toBe(true)
    q.clear()
  })

  it('refuses at once past maxPending, and a waiter past its wait', async () => {
    const q = new ConnectionQueue(1, 1, 50)
    const client = new EventEmitter()
    expect(q.acquire(client)).toBe(true)
    const waiting = q.acquire(client) as Promise<boolean>
    await expect(q.acquire(client)).resolves.toBe(false) // the queue is full
    const t0 = performance.now()
    await expect(waiting).resolves.toBe(false) // its wait ran out
    expect(performance.now() - t0).toBeGreaterThanOrEqual(40)
    expect(q.pending).toBe(0)
    expect(client.listenerCount('close')).toBe(0)
  })

  it('drops a waiter whose client closed, and refuses every waiter on clear()', async () => {
    const q = new ConnectionQueue(1, 10, 10_000)
    const gone = new EventEmitter()
    const staying = new EventEmitter()
    expect(q.acquire(gone)).toBe(true)
    const left = q.acquire(gone) as Promise<boolean>
    const next = q.acquire(staying) as Promise<boolean>
    gone.emit('close')
    await expect(left).resolves.toBe(false)
    q.release()
    await expect(next).resolves.toBe(true) // the connection went to the client still there
    const last = q.acquire(staying) as Promise<boolean>
    q.clear()
    await expect(last).resolves.toBe(false)
    expect(staying.listenerCount('close') + gone.listenerCount('close')).toBe(0)
  })

  it('queues nothing with maxPending 0', async () => {
    const q = new ConnectionQueue(1, 0, 10_000)
    const client = new EventEmitter()
    expect(q.acquire(client)).toBe(true)
    await expect(q.acquire(client)).resolves.toBe(false)
  })
})
