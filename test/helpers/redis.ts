import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, connect } from 'node:net'

/** A redis-server process owned by a test run. */
export interface RedisServer {
  readonly url: string
  readonly port: number
  readonly process: ChildProcess
  stop(): Promise<void>
}

/** PING a Redis URL over a raw socket (no client library, short timeout). */
export function pingRedis(url: string, timeoutMs = 500): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port || 6379) })
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('error', () => done(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (d) => done(d.toString().startsWith('+PONG')))
  })
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      )
    })
  })
}

/** Start a throwaway redis-server on a free loopback port (or `port`, to restart one), with no persistence. */
export async function startRedisServer(extraArgs: string[] = [], fixedPort?: number): Promise<RedisServer> {
  const port = fixedPort ?? (await freePort())
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs],
    { stdio: 'ignore' },
  )
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    const deadline = Date.now() + 5000
    const poll = (): void => {
      void pingRedis(`redis://127.0.0.1:${port}`, 200).then((ok) => {
        if (ok) resolve()
        else if (Date.now() > deadline) reject(new Error(`redis-server did not answer on port ${port}`))
        else setTimeout(poll, 50)
      })
    }
    poll()
  })
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        // Killed by a signal, a child has `signalCode` set and `exitCode` still null.
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

interface PubSubClient {
  pubsub(subcommand: 'NUMSUB', channel: string): Promise<unknown>
}

/**
 * Wait until `n` connections listen on `channel` (PUBSUB NUMSUB); throws after `timeoutMs`.
 * On a Redis Cluster a subscriber counts on the node it subscribed through: the masters' counts are summed.
 */
export async function waitForSubscribers(
  redis: object,
  channel: string,
  n: number,
  timeoutMs = 2000,
): Promise<void> {
  // An ioredis Redis or Cluster; Aegis' public `RedisClient` type lists only what Aegis calls.
  const client = redis as PubSubClient | { nodes(role: 'master'): PubSubClient[] }
  const end = Date.now() + timeoutMs
  for (;;) {
    let listeners = 0
    for (const node of 'nodes' in client ? client.nodes('master') : [client]) {
      const [, count] = (await node.pubsub('NUMSUB', channel)) as [string, number]
      listeners += Number(count)
    }
    if (listeners >= n) return
    if (Date.now() > end)
      throw new Error(`${listeners} of ${n} subscribers on ${channel} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
