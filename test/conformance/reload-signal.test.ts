import { fork, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { send } from '../helpers/send.js'
import { waitFor } from '../helpers/wait.js'

const fixture = fileURLToPath(new URL('../fixtures/reload-app.mjs', import.meta.url))
const built = fileURLToPath(new URL('../../packages/core/dist/index.js', import.meta.url))

let child: ChildProcess | undefined
let dir: string | undefined
afterEach(() => {
  child?.kill('SIGTERM')
  child = undefined
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

describe.skipIf(!existsSync(built))('SIGHUP (a child process, the built core)', () => {
  it('reloads the file on SIGHUP; a broken file is refused and the process keeps serving', async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-sighup-'))
    const file = join(dir, 'aegis.json')
    writeFileSync(file, JSON.stringify({ headers: { frameOptions: 'DENY' } }))
    const proc = fork(fixture, [], {
      env: { ...process.env, AEGIS_CONFIG: file },
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    })
    child = proc
    const lines: string[] = []
    proc.stdout?.setEncoding('utf8')
    proc.stdout?.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter(Boolean)))
    await waitFor('the child to listen', () => lines.length > 0)
    const url = `http://127.0.0.1:${lines[0]}`
    expect((await send(url)).headers['x-frame-options']).toBe('DENY')

    writeFileSync(file, JSON.stringify({ headers: { frameOptions: 'SAMEORIGIN' } }))
    proc.kill('SIGHUP')
    await waitFor('the reload', () => lines.includes('reloaded 2 signal'))
    expect((await send(url)).headers['x-frame-options']).toBe('SAMEORIGIN')

    writeFileSync(file, '{ broken')
    proc.kill('SIGHUP')
    await waitFor('the refusal', () => lines.includes('refused signal'))
    const after = await send(url)
    expect(after.status).toBe(200)
    expect(after.headers['x-frame-options']).toBe('SAMEORIGIN')
    expect(proc.exitCode).toBeNull()
  })
})
