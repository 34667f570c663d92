/**
 * The cache-tests origin, in a process of its own (`node
 * bench/lib/cache-tests-origin.mjs`): the suite's request handlers
 * (server/handle-*.mjs of `http-cache-tests`) behind a node:http server on
 * 127.0.0.1 and a free port. The suite's own server.mjs would listen on every
 * interface, on a port from npm's config, and write a pid file. Sends
 * `{ type: 'ready', port }` over IPC once it listens (lib/children.mjs
 * `spawnServer`), stops on SIGTERM.
 *
 * The handlers keep each test's configuration and the requests it saw in
 * memory, by the test's uuid: one origin serves any number of runs.
 */
import { createServer } from 'node:http'
import { importSuite } from './cache-tests-suite.mjs'

const [handleConfig, handleState, handleTest] = await Promise.all(
  ['config', 'state', 'test'].map(async (name) => (await importSuite(`server/handle-${name}.mjs`)).default),
)
const HANDLERS = { config: handleConfig, state: handleState, test: handleTest }

const server = createServer((req, res) => {
  // `/config/<uuid>` (PUT: the test's requests), `/test/<uuid>[/file]`, `/state/<uuid>`:
  // each handler takes the path's segments after its own.
  const [, first, ...rest] = new URL(req.url ?? '/', 'http://origin').pathname.split('/')
  const handler = HANDLERS[first]
  if (handler === undefined) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not a cache-tests path\n')
    return
  }
  handler(rest, req, res)
})

server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: server.address().port }))
// Nothing to flush: the state lives in memory and goes with the process.
process.once('SIGTERM', () => process.exit(0))
