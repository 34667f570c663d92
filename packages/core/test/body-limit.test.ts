import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createAegis, type Aegis, type AegisRequestState } from '../src/index.js'

/** A plain node:http server: the pipeline without any framework. */
async function serve(
  aegis: Aegis,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    // The memory store decides synchronously. That matters here: the parser pushes
    // the body right after this handler returns, and the handler may change the limit.
    const state = aegis.admit(req) as AegisRequestState
    aegis.applyHeaders(res, state)
    if (state.rejection) {
      res.writeHead(state.rejection.status, state.rejection.headers).end(state.rejection.body)
      return
    }
    handler(req, res)
  })
  aegis.attach(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port }
}

/** Stream `total` bytes chunked; resolve with what came back, or the socket error. */
function upload(port: number, total: number): Promise<{ status?: number; body?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent: false }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', (err: NodeJS.ErrnoException) =>
        resolve({ status: res.statusCode ?? 0, error: err.code ?? err.message }),
      )
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    const chunk = Buffer.alloc(16 * 1024, 120)
    let sent = 0
    const pump = (): void => {
      while (sent < total) {
        sent += chunk.length
        if (!req.write(chunk)) return void req.once('drain', pump)
      }
      req.end()
    }
    pump()
  })
}

describe('streaming body limit', () => {
  let aegis: Aegis | undefined
  afterEach(async () => {
    await aegis?.close()
  })

  it('does not consume the body: the handler reads every byte under the limit', async () => {
    aegis = createAegis({ validator: { maxBodyBytes: 100_000 } })
    const { port } = await serve(aegis, (req, res) => {
      let n = 0
      req.on('data', (d: Buffer) => (n += d.length))
      req.on('end', () => res.end(String(n)))
    })
    expect(await upload(port, 96 * 1024)).toEqual({ status: 200, body: String(96 * 1024) })
  })

  it('answers 413 problem+json before the handler has answered', async () => {
    aegis = createAegis({ validator: { maxBodyBytes: 50_000 } })
    const { port } = await serve(aegis, (req) => req.resume()) // a handler that never answers
    const result = await upload(port, 1024 * 1024)
    expect(result.status).toBe(413)
    expect(JSON.parse(result.body ?? '{}')).toMatchObject({ status: 413, code: 'AEGIS_ERR_BODY_TOO_LARGE' })
  })

  it('ends the request for the handler still reading it: its read rejects with the 413', async () => {
    aegis = createAegis({ validator: { maxBodyBytes: 50_000 } })
    let settled: (outcome: string) => void = () => {}
    const outcome = new Promise<string>((resolve) => (settled = resolve))
    const { port } = await serve(aegis, (req, res) => {
      const read = async (): Promise<number> => {
        let n = 0
        for await (const chunk of req) n += (chunk as Buffer).length
        return n
      }
      read().then(
        (n) => {
          settled(`read ${n}`)
          res.end('late')
        },
        (err: { code?: string }) => settled(`rejected ${err.code}`),
      )
    })
    const result = await upload(port, 1024 * 1024)
    expect(result.status).toBe(413)
    expect(await outcome).toBe('rejected AEGIS_ERR_BODY_TOO_LARGE')
  })

  it('destroys the connection when the response has already started', async () => {
    aegis = createAegis({ validator: { maxBodyBytes: 50_000 } })
    const { port } = await serve(aegis, (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('streaming…')
      req.resume()
    })
    const result = await upload(port, 1024 * 1024)
    expect(result.error).toBeDefined()
    expect(result.body).toBeUndefined()
  })

  it('setBodyLimit raises the limit for one request', async () => {
    aegis = createAegis({ validator: { maxBodyBytes: 10_000 } })
    const core = aegis
    const { port } = await serve(aegis, (req, res) => {
      core.setBodyLimit(req, 200_000)
      let n = 0
      req.on('data', (d: Buffer) => (n += d.length))
      req.on('end', () => res.end(String(n)))
    })
    expect(await upload(port, 160 * 1024)).toEqual({ status: 200, body: String(160 * 1024) })
  })
})
