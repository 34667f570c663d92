/**
 * An upstream answer cut mid-body, on a response pipelined behind a slower one: the
 * client must get the earlier answer whole, then a closed connection — never a hang,
 * never the cut answer taken for a whole one, never a later answer on that connection.
 * (Node 24's `res.destroy()` on a response still waiting for its turn no longer closes
 * the connection when the turn comes; `cut()` in node/response.ts does.)
 */
import type { Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { createServer } from 'node:http'
import { createAegis, type Aegis } from '@aegis/core'
import { expectCutBehindSlow } from '../helpers/pipelined.js'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { failOnUncaught } from '../helpers/uncaught.js'
import { listen } from './apps.js'

const uncaught = failOnUncaught()

describe('gateway: an answer cut mid-body behind a pipelined one', () => {
  let upstream: Upstream | undefined
  let aegis: Aegis | undefined
  let server: Server | undefined
  afterEach(async () => {
    server?.closeAllConnections()
    await Promise.all([
      aegis?.close(),
      upstream?.close(),
      new Promise((r) => server?.close(r) ?? r(undefined)),
    ])
  })

  it('the earlier answer arrives whole, then the connection closes', async () => {
    upstream = await startUpstream('cutting', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('partial')
      setTimeout(() => res.socket?.destroy(), 20)
    })
    aegis = createAegis({ proxy: [{ prefix: '/api', upstreams: [upstream.url], retry: false }] })
    server = createServer(
      aegis.handler((req, res) => {
        if (req.url === '/slow') setTimeout(() => res.end('slow'), 300)
        else res.end('ok')
      }),
    )
    aegis.attach(server)
    const port = await listen(server)
    await expectCutBehindSlow(port, '/api/x')
    expect(uncaught).toEqual([])
  })
})
