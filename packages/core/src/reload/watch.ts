/**
 * Reload an instance when its configuration file changes, or on SIGHUP. The file's
 * directory is watched, not the file: editors save by writing another file and renaming
 * it over the old one (vim, most IDEs), and Kubernetes swaps a symlink beside it — a watch
 * on the file itself would stay on the old inode. Events are debounced; the file is read
 * and hashed, and only content that differs from the last seen is loaded and applied.
 */
import { createHash } from 'node:crypto'
import { watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { AegisConfigError, type ConfigIssue } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import type { AegisOptions } from '../options/index.js'
import type { Aegis, ReloadResult } from '../pipeline/api.js'
import type { ReloadSource } from './events.js'

export interface WatchConfigOptions {
  /**
   * Read and parse the file into options (the CLI passes its YAML/JSON loader). May
   * return a promise; a throw (or rejection) is a refused file: the configuration in
   * force keeps running.
   */
  load: (path: string) => AegisOptions | Promise<AegisOptions>
  /** Quiet time after the last change before the file is read (milliseconds; 200 by default). */
  debounceMs?: number
  /**
   * Reload on this signal too (`true`: SIGHUP). A process listener is installed only when
   * asked, and removed by `close()`. Without it a SIGHUP ends the process, as Node's default.
   */
  signal?: boolean | NodeJS.Signals
  /** Where to log what happens (the bus carries `config.reloaded` / `config.refused` either way). */
  logger?: Logger | undefined
}

export interface ConfigWatcher {
  /** The file watched (an absolute path). */
  readonly file: string
  /** Read the file now and apply it when it changed (`force`: apply even when its hash did not). */
  check(force?: boolean): Promise<ReloadResult | undefined>
  /**
   * Read the file now and apply it, for someone (the admin API's reload): the reload is theirs
   * in the audit trail. `undefined` when the file could not be read or parsed (refused, reported).
   */
  reload(how: { source: ReloadSource; actor?: string }): Promise<ReloadResult | undefined>
  /** Stop watching (and listening for the signal). Idempotent. */
  close(): void
}

/**
 * The watcher of each instance, by its event bus (which the admin engine holds): how the admin
 * API's `POST /v1/config/reload` finds the file the instance was started from.
 */
const watchers = new WeakMap<object, ConfigWatcher>()

/** The file watcher of the instance whose bus is `events`, if it has one. */
export const watcherOf = (events: object): ConfigWatcher | undefined => watchers.get(events)

/** An editor's own files beside the one edited: vim's backup, swap files and its `4913` probe. */
const EDITOR_NOISE = /(~|\.sw[a-p]|\.sw[x-z]|^4913)$/

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

/**
 * Watch `path` and reload `aegis` from it. Never throws into the event loop: a file that
 * cannot be read, parsed or applied is reported (`config.refused` on the bus, the logger)
 * and the configuration in force keeps running.
 *
 * @example
 * const watcher = watchConfig(aegis, './aegis.yaml', { load: loadConfigFile, signal: true })
 * // later
 * watcher.close()
 */
export function watchConfig(aegis: Aegis, path: string, options: WatchConfigOptions): ConfigWatcher {
  const file = resolve(path)
  const name = basename(file)
  const debounceMs = options.debounceMs ?? 200
  const { logger } = options
  const signal = options.signal === true ? 'SIGHUP' : options.signal === false ? undefined : options.signal
  // The content last read (applied or refused): the same bytes again are no change.
  let seen: string | undefined
  let timer: NodeJS.Timeout | undefined
  let closed = false
  // One check at a time; a change meanwhile runs one more after it.
  let running: Promise<ReloadResult | undefined> | undefined
  let again = false

  const refuse = (source: ReloadSource, errors: readonly ConfigIssue[]): void => {
    const listed = errors.map(({ path: p, message }) => ({ path: p, message }))
    aegis.events.emit('config.refused', { generation: aegis.generation, source, file, errors: listed })
    logger?.warn(
      { file, source, errors: listed },
      'configuration file refused; the one in force keeps running',
    )
  }

  async function read(
    force: boolean,
    source: ReloadSource,
    actor?: string,
  ): Promise<ReloadResult | undefined> {
    let data: Buffer
    try {
      data = await readFile(file)
    } catch (err) {
      // Mid-rename (vim moves the old file away before writing the new one): the next event brings it.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !force) return undefined
      refuse(source, [{ path: '', message: `cannot read ${file}: ${(err as Error).message}` }])
      return undefined
    }
    const hash = sha256(data)
    if (hash === seen && !force) return undefined
    seen = hash
    let next: AegisOptions
    try {
      next = await options.load(file)
    } catch (err) {
      refuse(
        source,
        err instanceof AegisConfigError
          ? err.issues
          : [{ path: '', message: err instanceof Error ? err.message : String(err) }],
      )
      return undefined
    }
    if (closed || aegis.closed) return undefined
    const result = await aegis.reload(next, { source, file, ...(actor === undefined ? {} : { actor }) })
    if (result.ok && result.changed)
      logger?.info({ file, generation: result.generation }, 'configuration file applied')
    return result
  }

  function check(
    force = false,
    source: ReloadSource = 'file',
    actor?: string,
  ): Promise<ReloadResult | undefined> {
    if (running !== undefined) {
      again = true
      return running
    }
    const run = read(force, source, actor)
      .catch((err: unknown) => {
        // A bug of ours, or a loader that threw oddly: reported, never thrown.
        logger?.error({ err, file }, 'configuration reload failed')
        return undefined
      })
      .finally(() => {
        running = undefined
        if (again && !closed) {
          again = false
          void check()
        }
      })
    running = run
    return run
  }

  const schedule = (): void => {
    if (closed) return
    clearTimeout(timer)
    timer = setTimeout(() => void check(), debounceMs)
    timer.unref()
  }

  // The content at start is the configuration in force: only a change reloads.
  void readFile(file)
    .then((data) => {
      seen ??= sha256(data)
    })
    .catch(() => {})

  let watcher: FSWatcher | undefined
  try {
    // Every event in the directory: a rename onto the file, a symlink swapped beside it (`..data`).
    // The content hash tells a change from a neighbour's noise.
    watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
      if (changed === name || changed === null || !EDITOR_NOISE.test(changed)) schedule()
    })
    watcher.on('error', (err) => logger?.error({ err, file }, 'configuration watch failed'))
  } catch (err) {
    logger?.error({ err, file }, 'cannot watch the configuration file; reload on signal or through the API')
  }

  const onSignal = (): void => void check(true, 'signal')
  if (signal !== undefined) process.on(signal, onSignal)

  const self: ConfigWatcher = {
    file,
    check: (force = false) => check(force),
    // A reload asked for waits for the one running, then reads the file itself.
    reload: async ({ source, actor }) => {
      if (running !== undefined) await running
      return check(true, source, actor)
    },
    close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      watcher?.close()
      if (signal !== undefined) process.off(signal, onSignal)
      if (watchers.get(aegis.events) === self) watchers.delete(aegis.events)
    },
  }
  watchers.set(aegis.events, self)
  return self
}
