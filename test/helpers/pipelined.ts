import { expect } from 'vitest'
import { converse, parseResponses } from './raw-http.js'

const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`

/**
 * Send `GET /slow`, `GET <cut>` and `GET /ok` pipelined on one connection, where the server
 * answers `/slow` with `slow` after a while and starts `<cut>`'s answer without finishing it.
 * Expect the slow answer whole, then the connection closed within 2 s: the cut answer never
 * taken for a whole one (no last chunk), no answer given to the request after it.
 *
 * @example
 * await expectCutBehindSlow(port, '/api/x')
 */
export async function expectCutBehindSlow(port: number, cut: string): Promise<void> {
  const t0 = performance.now()
  const { raw, closed } = await converse(
    port,
    (socket) => void socket.write(GET('/slow') + GET(cut) + GET('/ok', 'Connection: close\r\n')),
    { timeoutMs: 3000 },
  )
  expect(closed).toBe(true)
  expect(performance.now() - t0).toBeLessThan(2000)
  const responses = parseResponses(raw)
  expect(responses[0]).toMatchObject({ status: 200, body: 'slow' })
  expect(responses.filter((r) => r.body === 'ok')).toEqual([])
  expect(raw).not.toMatch(/0\r\n\r\n$/)
}
