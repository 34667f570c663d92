/**
 * Running the real `aegis` binary (packages/cli/dist/bin.js, from `pnpm build`) as a child
 * process, and talking to it over loopback: shared by the CLI's test files.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url))
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

export interface Child {
  readonly proc: ChildProcess
  stdout: string
  stderr: string
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const children = new Set<Child>()

export function run(
  args: string[],
  env: Record<string, string> = {},
  /** `group`: a process group of its own, as a terminal's job (signal it all with `-pid`). */
  how: { group?: boolean } = {},
): Child {
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: how.group === true,
  })
  const child: Child = {
    proc,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal }))),
  }
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (child.stdout += d))
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (child.stderr += d))
  children.add(child)
  void child.exited.then(() => children.delete(child))
  return child
}

/** Run to completion (bounded). */
export async function complete(
  args: string[],
  env?: Record<string, string>,
): Promise<Child & { code: number | null }> {
  const child = run(args, env)
  const { code } = await within(child.exited, 10_000, `aegis ${args.join(' ')} did not exit`)
  return Object.assign(child, { code })
}

export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** The JSON log lines the child printed so far (stdout is a pipe: pino writes JSON). */
export function logLines(child: Child): Record<string, unknown>[] {
  return child.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Wait for the "listening" log line and return its URL. */
export async function listening(child: Child): Promise<string> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const line = logLines(child).find((l) => typeof l.url === 'string' && /listening/.test(String(l.msg)))
    if (line !== undefined) return line.url as string
    if (child.proc.exitCode !== null)
      throw new Error(`aegis exited ${child.proc.exitCode}: ${child.stderr}${child.stdout}`)
    if (Date.now() > deadline) throw new Error(`aegis did not listen: ${child.stderr}${child.stdout}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

export function get(url: string, init: { method?: string; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', agent: false, timeout: 5_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('request timed out')))
    req.on('error', reject)
    req.end(init.body)
  })
}

/** Stop every child still running (SIGKILL): for `afterEach`. */
export async function killChildren(): Promise<void> {
  for (const child of children) {
    child.proc.kill('SIGKILL')
    await child.exited
  }
}

/** A real upstream on loopback: echoes what it got as JSON, and answers /slow after 400 ms. */
export async function startUpstream(): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ upstream: true, method: req.method, url: req.url }))
    }
    if (req.url === '/slow') setTimeout(answer, 400)
    else answer()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
