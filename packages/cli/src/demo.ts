import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * The config `aegis serve --demo` runs, a config file like any other: the sample
 * upstream's address comes in through `${AEGIS_DEMO_UPSTREAM}`.
 */
export const DEMO_CONFIG = `# aegis serve --demo: a gateway in front of a sample upstream on loopback.
accessLog: true
validator:
  maxBodyBytes: 4096
limiter:
  points: 100
  duration: 60
  routes:
    # Three echoes a minute per client: the fourth is a 429 with Retry-After.
    "POST /api/echo":
      name: echo
      points: 3
      duration: 60
metrics:
  path: /metrics
proxy:
  - prefix: /api
    name: demo
    upstreams:
      - \${AEGIS_DEMO_UPSTREAM}
    timeouts:
      headers: 2000
`

const USERS = [
  { id: 1, name: 'Ada Lovelace' },
  { id: 2, name: 'Grace Hopper' },
  { id: 3, name: 'Margaret Hamilton' },
]

/** A running sample upstream. */
export interface DemoUpstream {
  readonly url: string
  readonly server: Server
  close(): Promise<void>
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    .end(text)
}

function answer(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://upstream.invalid')
  const path = url.pathname
  if (req.method === 'POST' && path === '/echo') {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => json(res, 200, { echo: Buffer.concat(chunks).toString('utf8') }))
    return
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method not allowed' })
  if (path === '/hello')
    return json(res, 200, { message: 'hello from the demo upstream', at: new Date().toISOString() })
  if (path === '/users') return json(res, 200, USERS)
  const user = /^\/users\/(\d+)$/.exec(path)
  if (user !== null) {
    const found = USERS.find((u) => u.id === Number(user[1]))
    return found === undefined ? json(res, 404, { error: 'no such user' }) : json(res, 200, found)
  }
  if (path === '/slow') {
    // Slower than the demo route's 2 s headers timeout when asked: the gateway answers 504.
    const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), 5000)
    const timer = setTimeout(() => json(res, 200, { waited: ms }), ms)
    res.on('close', () => clearTimeout(timer))
    return
  }
  json(res, 404, { error: 'not found' })
}

/**
 * The sample upstream of the demo: a few JSON routes (`/hello`, `/users`, `/users/:id`,
 * `POST /echo`, `/slow?ms=`) on loopback, on a free port.
 *
 * @example
 * const upstream = await startDemoUpstream()
 */
export async function startDemoUpstream(): Promise<DemoUpstream> {
  const server = createServer(answer)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })),
  }
}

/** The curl commands the demo prints, each with what it shows. */
export function demoCommands(url: string): string {
  return [
    `Aegis demo gateway on ${url} (Ctrl-C stops it). Try:`,
    '',
    `  curl -i ${url}/api/hello               # proxied, with security headers and RateLimit fields`,
    `  curl -s ${url}/api/users/2             # a JSON answer from the upstream`,
    `  curl -i ${url}/nowhere                 # 404 problem+json: no route takes it`,
    `  curl -i --path-as-is ${url}/api/../etc/passwd   # 400: path traversal refused`,
    `  curl -i -X TRACE ${url}/api/hello      # 405: method not allowed`,
    `  curl -i '${url}/api/slow?ms=3000'      # 504: the upstream took longer than 2 s`,
    `  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code}\\n' -X POST -d hi ${url}/api/echo; done   # 200 200 200 429`,
    `  curl -s ${url}/metrics | grep aegis_http_requests_total   # Prometheus metrics`,
    '',
  ].join('\n')
}
