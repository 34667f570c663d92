/**
 * nginx for the benches that measure it beside Aegis (gateway.mjs,
 * ghost-drill.mjs, cache-tests.mjs): its version, a configuration of one
 * worker confined to a temporary directory, and a start that waits until it
 * answers and a stop that leaves nothing behind. Everything listens on
 * 127.0.0.1.
 *
 * nginx runs in a process group of its own, killed as one: killing the master
 * alone would leave its worker running. Whatever is still alive when the
 * runner exits — done, thrown, or interrupted (lib/children.mjs turns SIGINT,
 * SIGTERM and SIGHUP into an exit) — is killed and its directory removed.
 */
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
// For its signal handlers: without a listener, Ctrl-C would end the runner without its 'exit' event.
import './children.mjs'

const START_MS = 5_000
const STOP_MS = 3_000
const READY_PAUSE_MS = 50
const STDERR_TAIL_CHARS = 2_000

/** `nginx -v`'s answer (it prints to stderr), or `undefined` when there is no nginx on the PATH. */
export const nginxVersion = () => spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr?.trim() || undefined

/** A port free on 127.0.0.1 a moment ago (nginx cannot listen on port 0 and tell us which it got). */
export const freePort = () =>
  new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })

/** Whether anything answers HTTP at `base` — any status: a 404 or a 502 from nginx is nginx answering. */
const answers = (base) =>
  new Promise((resolve) => {
    get(`${base}/`, { agent: false, timeout: 1_000 }, (res) => {
      res.resume()
      resolve(true)
    })
      .on('error', () => resolve(false))
      .on('timeout', function () {
        this.destroy()
      })
  })

/**
 * nginx.conf: one worker, no daemon, pid, logs and every temporary file in
 * `dir`, no access log; `http` (upstreams, cache paths) and `server`
 * (locations) are the lines that make it a given proxy, one directive a line,
 * indented here.
 *
 * @param {{ dir: string, port: number, workerConnections?: number, http?: string[], server?: string[] }} spec
 * @example
 * nginxConfig({ dir, port, server: ['location / {', `  proxy_pass ${origin};`, '}'] })
 */
export function nginxConfig({ dir, port, workerConnections = 1024, http = [], server = [] }) {
  const indent = (lines, pad) => lines.map((line) => `${pad}${line}\n`).join('')
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${indent(http, '  ')}  server {
    listen 127.0.0.1:${port};
${indent(server, '    ')}  }
}
`
}

/** nginx instances alive, by master pid (also their process group), with their directories. */
const alive = new Map()

const killGroup = (pid, signal) => {
  try {
    process.kill(-pid, signal)
  } catch {
    // gone already
  }
}

process.on('exit', () => {
  for (const [pid, dir] of alive) {
    killGroup(pid, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
})

/**
 * Start nginx on a free port with `nginxConfig`'s configuration, in a new
 * temporary directory `aegis-<name>-nginx-*`, and wait until it answers HTTP.
 * `http` gets that directory (for a `proxy_cache_path`). Throws, having
 * cleaned up, when nginx exits or does not answer within 5 s.
 *
 * @param {{ name: string, workerConnections?: number, http?: (dir: string) => string[], server: string[] }} spec
 * @returns {Promise<{ port: number, base: string, pid: number, config: string, stop: () => Promise<void> }>}
 *   `pid`: the master's (its worker is its child); `stop`: fast shutdown, then SIGKILL after 3 s.
 * @example
 * const nginx = await startNginx({ name: 'bench', server: ['location / {', '  return 204;', '}'] })
 * try { … nginx.base … } finally { await nginx.stop() }
 */
export async function startNginx({ name, workerConnections, http = () => [], server }) {
  const dir = mkdtempSync(join(tmpdir(), `aegis-${name}-nginx-`))
  // Started as root, nginx runs its worker as an unprivileged user, which must reach its cache and temp paths.
  chmodSync(dir, 0o755)
  const port = await freePort()
  const config = nginxConfig({ dir, port, workerConnections, http: http(dir), server })
  writeFileSync(join(dir, 'nginx.conf'), config)
  // `-e`: its errors before the configuration is read go to `dir` too, not to the system's log.
  const child = spawn('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true, // its own process group, so master and worker are killed as one
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr = (stderr + d).slice(-STDERR_TAIL_CHARS)))
  let ended = false
  const exited = new Promise((resolve) => {
    const end = () => {
      ended = true
      resolve()
    }
    child.once('exit', end)
    child.once('error', (err) => {
      stderr += String(err)
      end()
    })
  })
  if (child.pid !== undefined) alive.set(child.pid, dir)
  const halt = async () => {
    if (child.pid !== undefined) {
      if (ended) {
        killGroup(child.pid, 'SIGKILL') // a worker its master left behind, if any
      } else {
        killGroup(child.pid, 'SIGTERM') // fast shutdown: open client connections are closed
        const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), STOP_MS)
        await exited
        clearTimeout(timer)
      }
    }
    alive.delete(child.pid)
    rmSync(dir, { recursive: true, force: true })
  }
  let stopped
  const stop = () => (stopped ??= halt()) // once, however often it is called
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + START_MS
  while (!(await answers(base))) {
    if (ended || Date.now() > deadline) {
      await stop()
      throw new Error(`nginx did not answer on ${base}${stderr.trim() ? `: ${stderr.trim()}` : ''}`)
    }
    await new Promise((resolve) => setTimeout(resolve, READY_PAUSE_MS))
  }
  return { port, base, pid: child.pid, config, stop }
}
