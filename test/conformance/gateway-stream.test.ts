/**
 * 1 GiB through the gateway in each direction, generated and discarded on the
 * fly, on every adapter: the process' RSS must not grow by more than 64 MiB
 * (client, gateway and upstream all run here, so the bound covers all three).
 */
import { request as httpRequest } from 'node:http'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startUpstream, type Upstream } from '../helpers/upstream.js'
import { gateways, type GatewayApp } from './gateway-apps.js'

const GiB = 1024 ** 3
const CHUNK = Buffer.alloc(64 * 1024, 0x61)

/** `bytes` of a repeated 64 KiB chunk, produced as the reader asks for them. */
function generated(bytes: number): Readable {
  let left = bytes
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null)
      const n = Math.min(left, CHUNK.length)
      left -= n
      this.push(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))
    },
  })
}

/** Sample RSS every 50 ms while `work` runs; the highest growth over `before`. */
async function rssGrowth(before: number, work: () => Promise<void>): Promise<number> {
  let peak = before
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
  try {
    await work()
  } finally {
    clearInterval(timer)
  }
  return Math.max(peak, process.memoryUsage().rss) - before
}

function upload(app: GatewayApp, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: app.port,
        path: '/big/sink',
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes) },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (text += d))
        res.on('end', () =>
          res.statusCode === 200
            ? resolve((JSON.parse(text) as { bytes: number }).bytes)
            : reject(new Error(`${res.statusCode} ${text}`)),
        )
      },
    )
    req.on('error', reject)
    generated(bytes).pipe(req)
  })
}

function download(app: GatewayApp, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port: app.port, path: `/big/source?bytes=${bytes}` }, (res) => {
      let n = 0
      res.on('data', (c: Buffer) => (n += c.length))
      res.on('end', () => resolve(n))
      res.on('error', reject)
    })
      .on('error', reject)
      .end()
  })
}

describe.each(gateways)('1 GiB through the gateway on %s', (_name, createGateway) => {
  let upstream: Upstream
  let app: GatewayApp

  beforeAll(async () => {
    upstream = await startUpstream('big', (req, res, seen) => {
      if (req.url?.startsWith('/source')) {
        const bytes = Number(new URL(req.url, 'http://x').searchParams.get('bytes'))
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes) })
        generated(bytes).pipe(res)
      } else res.end(JSON.stringify({ bytes: seen.bytes }))
    })
    app = await createGateway([{ prefix: '/big', upstreams: [upstream.url], maxBodyBytes: 2 * GiB }], {
      limiter: false,
    })
    // Warm up: pools, buffers and JIT settle before the baseline.
    await upload(app, 32 * 1024 * 1024)
    await download(app, 32 * 1024 * 1024)
  })

  afterAll(async () => {
    await app.close()
    await upstream.close()
  })

  it('uploads and downloads 1 GiB each in constant memory', async () => {
    globalThis.gc?.()
    const before = process.memoryUsage().rss
    let up = 0
    let down = 0
    const growth = await rssGrowth(before, async () => {
      up = await upload(app, GiB)
      down = await download(app, GiB)
    })
    expect(up).toBe(GiB)
    expect(down).toBe(GiB)
    expect(growth, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(64 * 1024 * 1024)
  }, 120_000)
})
