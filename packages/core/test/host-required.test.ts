import { createServer } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { createAegis, type AegisRequestState } from '../src/index.js'
import { rawRequest } from '../../../test/helpers/raw-http.js'

describe('Host is required on HTTP/1.1 (RFC 9112 §3.2)', () => {
  it('answers 400 itself even when the server does not require it', async () => {
    const aegis = createAegis()
    const server = createServer({ requireHostHeader: false }, (req, res) => {
      const { rejection } = aegis.admit(req) as AegisRequestState // memory store: synchronous
      if (rejection)
        res
          .writeHead(rejection.status, {
            ...rejection.headers,
            'content-length': Buffer.byteLength(rejection.body),
          })
          .end(rejection.body)
      else res.end('ok')
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const port = (server.address() as AddressInfo).port
    const missing = await rawRequest(port, 'GET / HTTP/1.1\r\n\r\n')
    expect(missing.status).toBe(400)
    expect(JSON.parse(missing.body)).toMatchObject({ code: 'AEGIS_ERR_BAD_HOST' })
    expect((await rawRequest(port, 'GET / HTTP/1.0\r\n\r\n')).status).toBe(200)
    expect((await rawRequest(port, 'GET http://example.com/ HTTP/1.1\r\n\r\n')).status).toBe(200)
    server.close()
    await aegis.close()
  })
})
