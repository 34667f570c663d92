/**
 * A throwaway local Redis Cluster for tests: N masters, no replicas, loopback only, no persistence.
 *
 *   const cluster = await startRedisCluster()        // 3 masters
 *   const client = new Cluster(cluster.nodes)         // ioredis
 *   ...
 *   await cluster.stop()                              // idempotent
 *
 * Each node runs from its own temp dir (`--dir`), so nodes-<port>.conf files never collide; stop() removes
 * them. Every step is bounded in time, and if startup fails whatever was started is stopped before the error
 * is rethrown. Nodes left running when the process goes away (exit, SIGINT/SIGTERM/SIGHUP, loss of the
 * vitest IPC channel, even SIGKILL, through a per-node `sh` watchdog) are SIGKILLed and their dirs removed,
 * so no redis-server outlives the test run.
 *
 * Needs `redis-server` and `redis-cli` (Redis >= 5, for `--cluster create`) and `sh` on PATH.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { freePort, pingRedis } from './redis.js'

export interface RedisClusterNode {
  host: string
  port: number
}

export interface RedisCluster {
  /** One entry per master, in creation order; pass straight to `new Cluster(nodes)`. */
  nodes: RedisClusterNode[]
  /** SIGTERM every node (SIGKILL after 3 s) and remove the temp dirs. Idempotent. */
  stop(): Promise<void>
}

export interface RedisClusterOptions {
  /** Number of masters, at least 3 (a `redis-cli --cluster create` requirement). Default 3. */
  masters?: number
}

const HOST = '127.0.0.1'
/** Redis Cluster's bus listens on the data port plus this offset. */
const BUS_OFFSET = 10_000
const PING_TIMEOUT_MS = 5_000
const CREATE_TIMEOUT_MS = 10_000
const STATE_TIMEOUT_MS = 15_000
const CLI_TIMEOUT_MS = 2_000
const TERM_GRACE_MS = 3_000
const KILL_WAIT_MS = 2_000
/** How many times a node may fail to come up (e.g. its port was taken in between) before giving up. */
const NODE_ATTEMPTS = 3
const LOG_TAIL_CHARS = 4_000

interface NodeProcess {
  port: number
  dir: string
  child: ChildProcess
  log: () => string
}

// ---------------------------------------------------------------------------------------------------------
// Cleanup of last resort, so that no redis-server outlives the test run even when stop() is never reached:
//  - on 'exit', SIGINT/SIGTERM/SIGHUP, and loss of the IPC channel to the parent (a vitest fork worker
//    whose main process died), SIGKILL every node still running and remove its directory;
//  - every node also gets a watchdog (`sh` blocked reading a pipe from us) that does the same when that
//    pipe hits EOF, i.e. when this process dies by any means, SIGKILL included.

/** Running nodes, each with its directory and watchdog. */
const live = new Map<ChildProcess, { dir: string; watchdog: ChildProcess | undefined }>()
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function kill(child: ChildProcess | undefined, signal: NodeJS.Signals): void {
  try {
    child?.kill(signal)
  } catch {
    // already gone
  }
}

function killAllSync(): void {
  for (const [node, { dir, watchdog }] of live) {
    kill(watchdog, 'SIGKILL')
    kill(node, 'SIGKILL')
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {
      // best effort
    }
  }
  live.clear()
}

function onSignal(signal: NodeJS.Signals): void {
  killAllSync()
  unregisterCleanup()
  // Our listener suppressed the default action (terminate); re-raise it unless someone else handles it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
}

let cleanupRegistered = false

function registerCleanup(): void {
  if (cleanupRegistered) return
  cleanupRegistered = true
  process.on('exit', killAllSync)
  process.on('disconnect', killAllSync)
  for (const signal of SIGNALS) process.on(signal, onSignal)
}

function unregisterCleanup(): void {
  if (!cleanupRegistered) return
  cleanupRegistered = false
  process.off('exit', killAllSync)
  process.off('disconnect', killAllSync)
  for (const signal of SIGNALS) process.off(signal, onSignal)
}

/**
 * `sh` that SIGKILLs `pid` and removes `dir` when its stdin reaches EOF, and exits quietly when it reads a
 * line instead.
 */
function spawnWatchdog(pid: number, dir: string): ChildProcess | undefined {
  try {
    const watchdog = spawn(
      'sh',
      [
        '-c',
        'read -r _ || { kill -KILL "$1"; rm -rf "$2"; } 2>/dev/null',
        'redis-watchdog',
        String(pid),
        dir,
      ],
      {
        stdio: ['pipe', 'ignore', 'ignore'],
      },
    )
    watchdog.on('error', () => {}) // best effort: the other cleanups still apply
    watchdog.stdin?.on('error', () => {}) // EPIPE when it is already gone
    return watchdog
  } catch {
    return undefined
  }
}

/** Tell a watchdog to stand down (a line on its stdin), or SIGKILL it if that is not possible. */
function disarm(watchdog: ChildProcess | undefined): void {
  if (!watchdog || watchdog.exitCode !== null || watchdog.signalCode !== null) return
  if (watchdog.stdin?.writable) watchdog.stdin.end('\n')
  else kill(watchdog, 'SIGKILL')
}

function track(node: ChildProcess, dir: string): void {
  if (node.pid === undefined) return
  live.set(node, { dir, watchdog: spawnWatchdog(node.pid, dir) })
  registerCleanup()
  node.once('exit', () => {
    disarm(live.get(node)?.watchdog)
    live.delete(node)
    if (live.size === 0) unregisterCleanup()
  })
}

// ---------------------------------------------------------------------------------------------------------
// Ports

/** True when nothing listens on 127.0.0.1:port (we can bind it ourselves). */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, HOST, () => srv.close(() => resolve(true)))
  })
}

/** A free port whose bus port (port + 10000) is free too, and which collides with none in `taken`. */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await freePort()
    const bus = port + BUS_OFFSET
    if (bus > 65_535) continue
    if (taken.has(port) || taken.has(bus)) continue
    if (!(await portIsFree(bus))) continue
    // Re-check after the await: a concurrent caller may have claimed the same pair meanwhile.
    if (taken.has(port) || taken.has(bus)) continue
    taken.add(port)
    taken.add(bus)
    return port
  }
  throw new Error('could not find a free port pair (port, port+10000) on 127.0.0.1 after 50 attempts')
}

// ---------------------------------------------------------------------------------------------------------
// Processes

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** redis-cli colours its output even when it is not a terminal. */
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g')

function tail(text: string): string {
  const trimmed = text.replace(ANSI, '').trim()
  return trimmed.length > LOG_TAIL_CHARS ? `…${trimmed.slice(-LOG_TAIL_CHARS)}` : trimmed
}

/** Spawn one cluster-enabled redis-server in `dir`; resolves once it answers PING. */
async function spawnNode(port: number, dir: string): Promise<NodeProcess> {
  // prettier-ignore
  const args = [
    '--port', String(port),
    '--bind', HOST,
    '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`,
    '--cluster-node-timeout', '2000',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
  ]
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-LOG_TAIL_CHARS * 2)
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  const node: NodeProcess = { port, dir, child, log: () => tail(output) }
  track(child, dir)

  const url = `redis://${HOST}:${port}`
  const deadline = Date.now() + PING_TIMEOUT_MS
  let spawnError: Error | undefined
  child.on('error', (err) => (spawnError ??= err))
  for (;;) {
    if (spawnError) {
      throw new Error(`could not spawn redis-server (is it installed?): ${spawnError.message}`, {
        cause: spawnError,
      })
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      const err = new Error(
        `redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering PING:\n${node.log()}`,
      )
      ;(err as Error & { node: NodeProcess }).node = node
      throw err
    }
    if (await pingRedis(url, 200)) return node
    if (Date.now() > deadline) {
      await stopNode(node)
      throw new Error(
        `redis-server on port ${port} did not answer PING within ${PING_TIMEOUT_MS} ms:\n${node.log()}`,
      )
    }
    await sleep(50)
  }
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit)
      resolve(false)
    }, ms)
    const onExit = (): void => {
      clearTimeout(timer)
      resolve(true)
    }
    child.once('exit', onExit)
  })
}

/** SIGTERM, wait up to 3 s, then SIGKILL. Never throws. */
async function stopNode(node: NodeProcess): Promise<void> {
  const { child } = node
  if (child.pid === undefined) return
  if (child.exitCode !== null || child.signalCode !== null) return
  disarm(live.get(child)?.watchdog)
  child.kill('SIGTERM')
  if (await waitForExit(child, TERM_GRACE_MS)) return
  child.kill('SIGKILL')
  await waitForExit(child, KILL_WAIT_MS)
}

interface CliResult {
  ok: boolean
  output: string
}

/** Run redis-cli with a hard timeout; never throws, reports failures through `ok` and `output`. */
function redisCli(args: string[], timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      'redis-cli',
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024 },
      (err, stdout, stderr) => {
        const output = [stdout, stderr].filter((s) => s.trim() !== '').join('\n')
        if (!err) return resolve({ ok: true, output })
        const reason = (err as { killed?: boolean }).killed ? `timed out after ${timeoutMs} ms` : err.message
        resolve({ ok: false, output: `${reason}\n${output}` })
      },
    )
  })
}

// ---------------------------------------------------------------------------------------------------------

/** Start `masters` (default 3) cluster-enabled redis-servers on loopback and join them into one cluster. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const masters = options.masters ?? 3
  if (!Number.isInteger(masters) || masters < 3) {
    throw new RangeError(
      `masters must be an integer >= 3 (redis-cli --cluster create needs 3), got ${masters}`,
    )
  }

  const started: NodeProcess[] = []
  const dirs: string[] = []
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await Promise.all(started.map(stopNode))
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })))
    })())

  try {
    const taken = new Set<number>()
    const spawnOne = async (): Promise<NodeProcess> => {
      const dir = await mkdtemp(join(tmpdir(), 'redis-cluster-'))
      dirs.push(dir)
      for (let attempt = 1; ; attempt++) {
        const port = await freeClusterPort(taken)
        try {
          const node = await spawnNode(port, dir)
          started.push(node)
          return node
        } catch (err) {
          // A node that exited early most likely lost a race for its port: pick another one.
          const exited = (err as { node?: NodeProcess }).node
          if (!exited || attempt >= NODE_ATTEMPTS) throw err
        }
      }
    }
    // allSettled, not all: on failure, stop() must only run once every spawn has finished, or a node
    // that comes up late would escape it.
    const settled = await Promise.allSettled(Array.from({ length: masters }, spawnOne))
    const ports: number[] = []
    for (const result of settled) {
      if (result.status === 'rejected') throw result.reason
      ports.push(result.value.port)
    }

    const create = await redisCli(
      [
        '--cluster',
        'create',
        ...ports.map((p) => `${HOST}:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      CREATE_TIMEOUT_MS,
    )
    if (!create.ok) throw new Error(`redis-cli --cluster create failed: ${tail(create.output)}`)

    const deadline = Date.now() + STATE_TIMEOUT_MS
    for (const port of ports) {
      for (;;) {
        const info = await redisCli(['-h', HOST, '-p', String(port), 'cluster', 'info'], CLI_TIMEOUT_MS)
        if (info.ok && /^cluster_state:ok\r?$/m.test(info.output)) break
        if (Date.now() > deadline) {
          throw new Error(
            `Redis Cluster node ${HOST}:${port} did not reach cluster_state:ok within ${STATE_TIMEOUT_MS} ms.\n` +
              `Last \`redis-cli cluster info\`:\n${tail(info.output)}\n` +
              `\`redis-cli --cluster create\` said:\n${tail(create.output)}`,
          )
        }
        await sleep(100)
      }
    }

    return { nodes: ports.map((port) => ({ host: HOST, port })), stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * A cluster for the tests of the enclosing `describe`: started before them,
 * stopped after them. Returns its nodes, for the tests to read once it runs.
 *
 *   const nodes = useRedisCluster()
 *   it('…', () => new Cluster(nodes()))
 */
export function useRedisCluster(options?: RedisClusterOptions): () => RedisClusterNode[] {
  let cluster: RedisCluster | undefined
  beforeAll(async () => {
    cluster = await startRedisCluster(options)
  }, 60_000)
  afterAll(async () => {
    await cluster?.stop()
  })
  return () => {
    if (cluster === undefined) throw new Error('the Redis Cluster has not started')
    return cluster.nodes
  }
}
