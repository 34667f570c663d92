// The upstreams aegis.yaml points at, for trying the example: two instances of a small
// JSON API (3001, 3002) and a static server (3003), all on loopback.
import { createServer } from 'node:http'

function api(name) {
  return (req, res) => {
    const body = JSON.stringify(
      req.url === '/health' ? { ok: true } : { instance: name, method: req.method, url: req.url },
    )
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=5' }).end(body)
  }
}

const servers = [
  createServer(api('a')).listen(3001, '127.0.0.1'),
  createServer(api('b')).listen(3002, '127.0.0.1'),
  createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`static file ${req.url}\n`)
  }).listen(3003, '127.0.0.1'),
]
console.log('upstreams on 127.0.0.1:3001, :3002 (API) and :3003 (static); Ctrl-C stops them')
process.on('SIGINT', () => servers.forEach((s) => s.close()))
process.on('SIGTERM', () => servers.forEach((s) => s.close()))
