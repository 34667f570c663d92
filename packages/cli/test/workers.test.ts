/**
 * `aegis serve FILE --workers N`: the real binary forking real workers (node:cluster)
 * that share their limits through the test run's real Redis.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest'
import {
  BIN,
  complete,
  get,
  killChildren,
  listening,
  logLines,
  run,
  startUpstream,
  within,
  type Child,
} from './helpers.js'

let dir: string
let upstream: Awaited<ReturnType<typeof startUpstream>>

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run 'pnpm build' first`)
  dir = await mkdtemp(join(tmpdir(), 'aegis-workers-'))
  upstream = await startUpstream()
})

afterEach(killChildren)

afterAll(async () => {
  await upstream.close()
  await rm(dir, { recursive: true, force: true })
})

/** A config on the run's Redis, under a prefix of its own. */
async function config(name: string, points: number): Promise<string> {
  const path = join(dir, `${name}.yaml`)
  const prefix = `aegis-test:workers:${name}:${process.pid}:${Date.now().toString(36)}:`
  await writeFile(
    path,
    [
      'accessLog: true',
      'store:',
      `  redis: ${inject('redisUrl')}`,
      `  prefix: "${prefix}"`,
      'limiter:',
      `  points: ${points}`,
      '  duration: 60',
      'proxy:',
      '  - prefix: /api',
      `    upstreams: [${upstream.url}]`,
      '',
    ].join('\n'),
  )
  return path
}

/** The pid of each worker slot's latest "ready" line, from the primary's log. */
function readyWorkers(child: Child): Map<number, number> {
  const ready = new Map<number, number>()
  for (const l of logLines(child))
    if (typeof l.msg === 'string' && /^worker \d+ ready$/.test(l.msg))
      ready.set(l.worker as number, l.workerPid as number)
  return ready
}

async function until(what: string, child: Child, ok: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: ${child.stderr}${child.stdout}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * A bounded load: `total` GETs over `connections` keep-alive connections, sequential on each;
 * `during(done)` is called after each answer (or failure) with how many have finished.
 */
async function load(
  url: string,
  total: number,
  connections: number,
  during: (done: number) => void = () => {},
): Promise<{ ok: number; failed: number; statuses: Map<number, number> }> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections })
  const statuses = new Map<number, number>()
  let next = 0
  let done = 0
  let failed = 0
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const req = request(`${url}/api/load`, { agent, timeout: 5_000 }, (res) => {
        res.resume()
        res.on('end', () => {
          statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1)
          resolve()
        })
        res.on('error', () => {
          failed++
          resolve()
        })
      })
      req.on('timeout', () => req.destroy(new Error('timed out')))
      req.on('error', () => {
        failed++
        resolve()
      })
      req.end()
    })
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (next < total) {
        next++
        await one()
        during(++done)
      }
    }),
  )
  agent.destroy()
  return { ok: total - failed, failed, statuses }
}

describe('aegis serve --workers', () => {
  it('holds a limit of N requests exactly across two workers sharing Redis', async () => {
    const path = await config('exact', 20)
    const child = run(['serve', path, '--port', '0', '--workers', '2'], {}, { group: true })
    const url = await listening(child)
    expect(readyWorkers(child).size).toBe(2)
    // A connection each: the primary hands them to the workers in turn.
    const answers = await Promise.all(Array.from({ length: 50 }, () => get(`${url}/api/x`)))
    const statuses = answers.map((a) => a.status)
    expect(statuses.filter((s) => s === 200)).toHaveLength(20)
    expect(statuses.filter((s) => s === 429)).toHaveLength(30)
    // Both workers answered some (their access log lines carry their slot).
    await until(
      '50 access log lines',
      child,
      () => logLines(child).filter((l) => l.msg === 'request completed').length === 50,
    )
    const bySlot = new Map<number, number>()
    for (const l of logLines(child))
      if (l.msg === 'request completed')
        bySlot.set(l.worker as number, (bySlot.get(l.worker as number) ?? 0) + 1)
    expect([...bySlot.keys()].sort()).toEqual([0, 1])

    // Ctrl-C in a terminal: SIGINT to the whole group, the primary's stop on top. One drain each.
    process.kill(-(child.proc.pid as number), 'SIGINT')
    expect((await within(child.exited, 10_000, 'no exit after SIGINT')).code).toBe(0)
    expect(logLines(child).filter((l) => l.msg === 'stopped')).toHaveLength(3) // two workers, the primary
    expect(logLines(child).filter((l) => l.level !== 30)).toEqual([])
  })

  it('replaces a worker killed mid-load: no failed request beyond the connections it held', async () => {
    const path = await config('kill', 1_000_000)
    const child = run(['serve', path, '--port', '0', '--workers', '2'])
    const url = await listening(child)
    const before = readyWorkers(child)
    const victim = before.get(1) as number
    const connections = 8
    let killed = false
    const result = await load(url, 1_200, connections, (done) => {
      if (done === 300 && !killed) {
        killed = true
        process.kill(victim, 'SIGKILL')
      }
    })
    expect(killed).toBe(true)
    // Only requests on the dead worker's connections can fail: at most one each.
    expect(result.failed).toBeLessThanOrEqual(connections)
    expect(result.statuses.get(200)).toBe(result.ok)
    await until('a new worker 1', child, () => {
      const pid = readyWorkers(child).get(1)
      return pid !== undefined && pid !== victim
    })
    expect(logLines(child).some((l) => l.msg === 'worker 1 died: starting another')).toBe(true)
    // The two serve again: a fresh load, nothing fails.
    const after = await load(url, 200, 4)
    expect(after.failed).toBe(0)
  })

  it('restarts the workers one by one on SIGUSR2 without failing a request, and reloads them all on SIGHUP', async () => {
    const path = await config('restart', 1_000_000)
    const child = run(['serve', path, '--port', '0', '--workers', '2'])
    const url = await listening(child)
    const before = readyWorkers(child)
    // New connections throughout (no keep-alive: a drained worker closes its idle ones).
    let stop = false
    let failed = 0
    let ok = 0
    const traffic = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (!stop) {
          try {
            const a = await get(`${url}/api/r`)
            if (a.status === 200) ok++
            else failed++
          } catch {
            failed++
          }
        }
      }),
    )
    await new Promise((r) => setTimeout(r, 200))
    child.proc.kill('SIGUSR2')
    await until(
      'workers restarted',
      child,
      () => logLines(child).some((l) => l.msg === 'workers restarted'),
      30_000,
    )
    await new Promise((r) => setTimeout(r, 200))
    stop = true
    await traffic
    expect(failed).toBe(0)
    expect(ok).toBeGreaterThan(20)
    const after = readyWorkers(child)
    expect(after.size).toBe(2)
    for (const slot of [0, 1]) expect(after.get(slot)).not.toBe(before.get(slot))

    // SIGHUP: every worker reads the file again (a new limit in each).
    await writeFile(path, (await readFile(path, 'utf8')).replace('points: 1000000', 'points: 999999'))
    child.proc.kill('SIGHUP')
    await until(
      'both workers reloaded',
      child,
      () =>
        new Set(
          logLines(child)
            .filter((l) => l.msg === 'configuration reloaded')
            .map((l) => l.worker),
        ).size === 2,
    )
  })

  it('exits 1 when the workers cannot listen (the port is taken)', async () => {
    const path = await config('busy', 10)
    const child = run(['serve', path, '--port', new URL(upstream.url).port, '--workers', '2'])
    expect((await within(child.exited, 15_000, 'no exit')).code).toBe(1)
    expect(logLines(child).some((l) => /EADDRINUSE/.test(String(l.msg)))).toBe(true)
    expect(logLines(child).some((l) => l.msg === 'the workers did not start')).toBe(true)
  })

  it('refuses a memory store with the limiter on (it names the option), and --workers with --demo', async () => {
    const path = join(dir, 'memory.yaml')
    await writeFile(path, `proxy:\n  - prefix: /api\n    upstreams: [${upstream.url}]\n`)
    const refused = await complete(['serve', path, '--port', '0', '--workers', '2'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/store: --workers 2 needs a shared store/)
    const demo = await complete(['serve', '--demo', '--workers', '2'])
    expect(demo.code).toBe(2)
    expect(demo.stderr).toMatch(/--demo runs in one process/)
    const bad = await complete(['serve', path, '--workers', 'many'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--workers expects 1 to 256 or 'auto', got 'many'/)
  })
})
