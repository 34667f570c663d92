import { mkdtempSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createAegis,
  watchConfig,
  type Aegis,
  type AegisEvents,
  type AegisOptions,
  type ConfigWatcher,
} from '@aegis/core'
import { sleep, waitFor } from '../../../test/helpers/wait.js'

let aegis: Aegis | undefined
let watcher: ConfigWatcher | undefined
let dir: string | undefined

afterEach(async () => {
  watcher?.close()
  watcher = undefined
  await aegis?.close()
  aegis = undefined
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  dir = undefined
})

const loadJson = (path: string): AegisOptions => JSON.parse(readFileSync(path, 'utf8')) as AegisOptions
const options = (points: number): AegisOptions => ({ limiter: { points, duration: 60 } })

function setup(): {
  core: Aegis
  file: string
  reloaded: AegisEvents['config.reloaded'][]
  refused: AegisEvents['config.refused'][]
} {
  dir = mkdtempSync(join(tmpdir(), 'aegis-reload-'))
  const file = join(dir, 'aegis.json')
  writeFileSync(file, JSON.stringify(options(10)))
  const core = createAegis(loadJson(file))
  aegis = core
  const reloaded: AegisEvents['config.reloaded'][] = []
  const refused: AegisEvents['config.refused'][] = []
  core.events.on('config.reloaded', (e) => reloaded.push(e))
  core.events.on('config.refused', (e) => refused.push(e))
  watcher = watchConfig(core, file, { load: loadJson, debounceMs: 50 })
  return { core, file, reloaded, refused }
}

const points = (core: Aegis): number => (core.config.limiter === false ? 0 : core.config.limiter.points)

describe('watchConfig', () => {
  it('applies a file written in place, with source and file in the event', async () => {
    const { core, file, reloaded } = setup()
    await sleep(100)
    writeFileSync(file, JSON.stringify(options(20)))
    await waitFor('the reload', () => core.generation === 2)
    expect(points(core)).toBe(20)
    expect(reloaded[0]).toMatchObject({ generation: 2, source: 'file', file })
  })

  it('detects an editor saving by rename (a temporary file moved over it), and vim’s backup dance', async () => {
    const { core, file } = setup()
    await sleep(100)
    const tmp = `${file}.tmp-1234`
    writeFileSync(tmp, JSON.stringify(options(30)))
    renameSync(tmp, file)
    await waitFor('the renamed save', () => points(core) === 30)
    // vim (backupcopy=no): the file moved to file~, a new file written, the backup deleted.
    renameSync(file, `${file}~`)
    writeFileSync(file, JSON.stringify(options(40)))
    unlinkSync(`${file}~`)
    await waitFor('the vim save', () => points(core) === 40)
    expect(core.generation).toBe(3)
  })

  it('does not reload when the content did not change, nor for a neighbour’s change', async () => {
    const { core, file, reloaded, refused } = setup()
    await sleep(100)
    writeFileSync(file, JSON.stringify(options(10)))
    writeFileSync(join(dir as string, 'other.txt'), 'x')
    await sleep(300)
    expect(reloaded).toEqual([])
    expect(refused).toEqual([])
    expect(core.generation).toBe(1)
  })

  it('a broken file is refused and audited; the configuration in force keeps running; the fix applies', async () => {
    const { core, file, refused } = setup()
    await sleep(100)
    writeFileSync(file, '{ "limiter": { "points": ')
    await waitFor('the refusal', () => refused.length === 1)
    expect(refused[0]).toMatchObject({ generation: 1, source: 'file', file, errors: [{ path: '' }] })
    writeFileSync(file, JSON.stringify({ limiter: { points: 'many' } }))
    await waitFor('the second refusal', () => refused.length === 2)
    expect(refused[1]?.errors[0]?.path).toBe('limiter.points')
    expect(core.generation).toBe(1)
    expect(points(core)).toBe(10)
    expect(core.audit?.entries().filter((e) => e.type === 'config.refused')).toHaveLength(2)
    writeFileSync(file, JSON.stringify(options(50)))
    await waitFor('the fixed file', () => points(core) === 50)
  })

  it('installs no SIGHUP listener unless asked, and removes the one it installed on close()', () => {
    const { core, file } = setup()
    const before = process.listenerCount('SIGHUP')
    const quiet = watchConfig(core, file, { load: loadJson })
    expect(process.listenerCount('SIGHUP')).toBe(before)
    quiet.close()
    const loud = watchConfig(core, file, { load: loadJson, signal: true })
    expect(process.listenerCount('SIGHUP')).toBe(before + 1)
    loud.close()
    expect(process.listenerCount('SIGHUP')).toBe(before)
  })

  it('a loader that throws or rejects is a refusal, never an uncaught error; close() stops watching', async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-reload-'))
    const file = join(dir, 'aegis.json')
    writeFileSync(file, '{}')
    const core = createAegis({})
    aegis = core
    const refused: AegisEvents['config.refused'][] = []
    core.events.on('config.refused', (e) => refused.push(e))
    let calls = 0
    watcher = watchConfig(core, file, {
      debounceMs: 20,
      load: () => {
        calls++
        if (calls === 1) throw new Error('boom')
        return Promise.reject(new Error('later boom'))
      },
    })
    await sleep(60)
    writeFileSync(file, '{"a":1}')
    await waitFor('a refusal', () => refused.length === 1)
    writeFileSync(file, '{"a":2}')
    await waitFor('a second refusal', () => refused.length === 2)
    expect(refused.map((r) => r.errors[0]?.message)).toEqual(['boom', 'later boom'])
    watcher.close()
    writeFileSync(file, '{"a":3}')
    await sleep(150)
    expect(calls).toBe(2)
  })
})
