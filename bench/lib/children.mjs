/**
 * Child processes of the runner: the measured servers and the load
 * generators. Every child is tracked and killed when the runner exits, fails
 * or is interrupted, so a run never leaves a server or wrk behind.
 */
import { execFileSync, spawn } from 'node:child_process'
import { constants } from 'node:os'

const live = new Set()

/** The children of `pid` (nginx' worker), none when it has none. */
export function childPids(pid) {
  try {
    return execFileSync('pgrep', ['-P', String(pid)])
      .toString()
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number)
  } catch {
    return [] // pgrep exits 1 when nothing matches
  }
}

/**
 * Run every thread of `pid` and of its children (nginx' worker) on `cpus`
 * (taskset's list: `1`, `0-1`). The benches' `--pin`: on a 2-core machine the
 * scheduler otherwise moves the measured server between the cores it shares
 * with the load generator, and its CPU per request moves with where it lands.
 */
export function pinProcessTree(pid, cpus) {
  for (const p of [pid, ...childPids(pid)])
    execFileSync('taskset', ['-a', '-pc', cpus, String(p)], { stdio: 'ignore' })
}

function killAll() {
  for (const child of live) child.kill('SIGKILL')
}

process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAll()
    process.exit(128 + constants.signals[signal])
  })
}

/** `spawn`, and kill the child when the runner exits. */
export function spawnTracked(command, args, options) {
  const child = spawn(command, args, options)
  live.add(child)
  const forget = () => live.delete(child)
  child.once('exit', forget)
  child.once('error', forget)
  return child
}

const exited = (child) => child.exitCode !== null || child.signalCode !== null

/**
 * Run a command to completion and collect its output. It is killed after
 * `timeoutMs` (then `signal` is SIGKILL), so a hung tool cannot stall the run.
 *
 * @returns {Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string }>}
 */
export function run(command, args, { timeoutMs, cwd, env }) {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(command, args, {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(env !== undefined && { env }),
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

const IPC_TIMEOUT_MS = 15_000
const STOP_GRACE_MS = 3_000
const LOG_TAIL_CHARS = 4_000

/**
 * Start `node <script> <variant> [...args]` and wait until it listens.
 *
 * @returns {ReturnType<typeof spawnServer>}
 */
export const startServer = (script, variant, ...args) => spawnServer({ script, args: [variant, ...args] })

/**
 * `startServer` with the child's environment given (`env`, default the
 * runner's): an A/B run points a server at the baseline build this way
 * (lib/aegis.mjs). `nodeArgs`: Node's own flags for the child, before the
 * script (`--expose-gc`, `--cpu-prof`).
 *
 * @param {{ script: string, args: string[], env?: NodeJS.ProcessEnv, nodeArgs?: string[] }} spec
 * @returns {Promise<{
 *   port: number,
 *   pid: number,
 *   aegis?: Array<{ name: string, file: string, core?: string, sameInstance?: boolean }>,
 *   cpuUsage: () => Promise<NodeJS.CpuUsage>,
 *   probe: () => Promise<{ problems: string[], redisCpuUs?: number }>,
 *   ask: (message: string, replyType: string) => Promise<object>,
 *   log: () => string,
 *   stop: () => Promise<void>,
 * }>}
 */
export async function spawnServer({ script, args, env, nodeArgs = [] }) {
  const variant = args[0]
  const child = spawnTracked(process.execPath, [...nodeArgs, script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    ...(env !== undefined && { env }),
  })
  // Keep the end of the server's output: shown only when a run fails.
  let log = ''
  const keep = (d) => (log = (log + d).slice(-LOG_TAIL_CHARS))
  child.stdout.setEncoding('utf8').on('data', keep)
  child.stderr.setEncoding('utf8').on('data', keep)

  /** Wait for the next IPC message of `type`, after `send()` if given. */
  const request = (type, send) =>
    new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer)
        child.off('message', onMessage)
        child.off('exit', onExit)
      }
      const fail = (message) => {
        done()
        reject(new Error(`${variant} server: ${message}${log ? `\n${log.trimEnd()}` : ''}`))
      }
      const onMessage = (message) => {
        if (message?.type !== type) return
        done()
        resolve(message)
      }
      const onExit = (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before "${type}"`)
      const timer = setTimeout(() => fail(`no "${type}" within ${IPC_TIMEOUT_MS} ms`), IPC_TIMEOUT_MS)
      child.on('message', onMessage)
      child.once('exit', onExit)
      if (exited(child)) onExit(child.exitCode, child.signalCode)
      else send?.()
    })

  const stop = () =>
    new Promise((resolve) => {
      if (exited(child)) return resolve()
      const force = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
      child.once('exit', () => {
        clearTimeout(force)
        resolve()
      })
      child.kill('SIGTERM')
    })

  try {
    const { port, aegis } = await request('ready')
    return {
      port,
      pid: child.pid,
      /** Where the server imported Aegis from (lib/aegis.mjs `aegisImports()`), when it says. */
      aegis,
      cpuUsage: async () => (await request('cpu', () => child.send('cpu'))).usage,
      /** The variant's own probe (`variant.probe`), run in the server process. */
      probe: async () => {
        const { problems, ...figures } = await request('probe', () => child.send('probe'))
        delete figures.type
        return { problems, ...figures }
      },
      /** Send `message` and wait for the server's answer of type `replyType`. */
      ask: (message, replyType) => request(replyType, () => child.send(message)),
      log: () => log,
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
