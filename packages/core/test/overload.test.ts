/**
 * The overload engine: load shedding and adaptive concurrency protect the process,
 * ahead of the rate limiter, so that a request the process cannot take costs its
 * client no quota, and a request the limiter refuses never keeps a concurrency slot.
 * Real HTTP over loopback, through the plain node:http adapter.
 */
import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { createAegis, type AegisOptions } from '../src/index.js'

async function serve(options: AegisOptions, hold: ServerResponse[]) {
  const aegis = createAegis(options)
  const server = createServer(
    aegis.handler((req, res) => {
      if (req.url === '/hold') hold.push(res)
      else res.end('ok')
    }),
  )
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    aegis,
    url,
    close: async () => {
      for (const res of hold) res.end()
      server.closeAllConnections()
      await Promise.all([new Promise((r) => server.close(r)), aegis.close()])
    },
  }
}

describe('overload engine', () => {
  const adaptive = { initialLimit: 2, minLimit: 2, maxLimit: 2 }

  it('a request the limiter refuses gives its concurrency slot back: later requests are not shed', async () => {
    const held: ServerResponse[] = []
    // One request a minute per client: everything after the first is refused by the limiter.
    const app = await serve({ limiter: { points: 1, duration: 60, adaptive } }, held)
    try {
      expect((await fetch(`${app.url}/`)).status).toBe(200)
      const refused = await Promise.all(Array.from({ length: 10 }, () => fetch(`${app.url}/`)))
      expect(refused.map((r) => r.status)).toEqual(Array(10).fill(429))
      // Had the ten refusals kept their slots, the limit of 2 would shed these as 503 'concurrency'.
      const after = await fetch(`${app.url}/`)
      expect(after.status).toBe(429)
      expect(((await after.json()) as { code: string }).code).toBe('AEGIS_ERR_RATE_LIMITED')
      expect(app.aegis.limiter?.concurrencyLimit).toBe(2)
    } finally {
      await app.close()
    }
  })

  it('a request shed at the concurrency limit costs its client no quota', async () => {
    const held: ServerResponse[] = []
    const app = await serve({ limiter: { points: 3, duration: 60, adaptive } }, held)
    try {
      // Two requests hold both slots (and two of the three points).
      const holding = [fetch(`${app.url}/hold`), fetch(`${app.url}/hold`)]
      await new Promise((resolve) => {
        const poll = (): void => void (held.length === 2 ? resolve(undefined) : setTimeout(poll, 5))
        poll()
      })
      const shed = await Promise.all(Array.from({ length: 5 }, () => fetch(`${app.url}/`)))
      expect(shed.map((r) => r.status)).toEqual(Array(5).fill(503))
      expect(((await shed[0]?.json()) as { code: string }).code).toBe('AEGIS_ERR_OVERLOADED')
      for (const res of held.splice(0)) res.end('done')
      await Promise.all(holding)
      // The shed requests were never charged: the third point is still there.
      expect((await fetch(`${app.url}/`)).status).toBe(200)
      expect((await fetch(`${app.url}/`)).status).toBe(429)
    } finally {
      await app.close()
    }
  })

  it('is off, and not in the pipeline, when neither adaptive nor shed is set', async () => {
    const aegis = createAegis({})
    expect(aegis.limiter?.concurrencyLimit).toBeUndefined()
    await aegis.close()
  })
})
