import {
  AegisConfigError,
  createAegis,
  formatConfigIssue,
  loadConfigFile,
  loadConfigFileSync,
  watchConfig,
  parseConfigText,
  parseOptions,
  type AegisConfig,
  type LoadedConfig,
} from '@aegis/core'
import type { LevelWithSilent } from 'pino'
import { forSlot, supervise, tellPrimary, workerSlot, workersProblem, type ToWorker } from './cluster.js'
import { DEMO_CONFIG, demoCommands, startDemoUpstream, type DemoUpstream } from './demo.js'
import { startGateway, urlOf, type RunningGateway } from './gateway.js'
import { createLogger, type LogFormat } from './logger.js'

/** Where the CLI writes what is not a log line (help, validate's answer, usage errors). */
export interface CliIo {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  /** `process.env` by default: `${NAME}` references in config files are read from it. */
  readonly env?: Readonly<Record<string, string | undefined>>
}

/** Print every issue of a refused config, one `FILE:LINE:COLUMN path: problem` line each. */
function printIssues(io: CliIo, err: AegisConfigError, source: string): void {
  const lines = err.issues.map((i) => formatConfigIssue(i.source === undefined ? { ...i, source } : i))
  io.stderr(
    `${lines.join('\n')}\n${source}: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'}\n`,
  )
}

/** `aegis validate FILE`: the exit code. */
export async function validate(file: string, io: CliIo): Promise<number> {
  let loaded: LoadedConfig
  try {
    loaded = await loadConfigFile(file, { env: io.env ?? process.env })
  } catch (err) {
    if (!(err instanceof AegisConfigError)) throw err
    printIssues(io, err, file)
    return 1
  }
  // The checks only a built instance makes (two limiter policies with one name): built here
  // when that connects nowhere, i.e. without a Redis store, and closed at once. An admin
  // listener would bind a port (perhaps the running gateway's): its section is left out,
  // the schema has checked it.
  if (loaded.options.store === undefined) {
    const probe: Record<string, unknown> = { ...loaded.options, logger: SILENT }
    delete probe.admin
    // Nor may a check create the audit trail's SQLite file: the probe keeps it in memory.
    const audit = probe.audit
    if (typeof audit === 'object' && audit !== null) probe.audit = { ...audit, store: 'memory' }
    try {
      await createAegis(probe).close()
    } catch (err) {
      if (!(err instanceof AegisConfigError)) throw err
      printIssues(io, err, file)
      return 1
    }
  }
  io.stdout(
    `${file}: valid (${summary(parseOptions({ ...loaded.options, logger: SILENT }))}; sha256 ${loaded.hash.slice(0, 12)})\n`,
  )
  return 0
}

const SILENT = { info() {}, warn() {}, error() {} }

/** One line on what a config turns on. */
function summary(config: AegisConfig): string {
  const routes = config.proxy.length
  const upstreams = config.proxy.reduce((n, r) => n + r.upstreams.length, 0)
  const on: string[] = []
  if (config.limiter !== false) on.push('limiter')
  if (config.anomaly !== false) on.push(`anomaly (${config.anomaly.mode})`)
  if (config.ghost !== false || config.proxy.some((r) => r.ghost !== undefined && r.ghost !== false))
    on.push('ghost')
  if (config.cors !== false) on.push('cors')
  if (config.metrics !== false)
    on.push(config.metrics.path === undefined ? 'metrics' : `metrics at ${config.metrics.path}`)
  if (config.store.redis !== undefined || config.store.cluster !== undefined) on.push('Redis store')
  if (config.admin !== false)
    on.push(config.admin.listen === false ? 'admin API' : `admin API on ${config.admin.listen}`)
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`
  return `${plural(routes, 'proxy route')}, ${plural(upstreams, 'upstream')}; ${on.length === 0 ? 'no engine' : on.join(', ')}`
}

export interface ServeArgs {
  readonly file: string | undefined
  readonly port: number
  readonly host: string
  readonly level: LevelWithSilent
  readonly format: LogFormat
  readonly io: CliIo
  /** `--workers N`: this process supervises N workers (node:cluster), each of which runs this again. */
  readonly workers?: number | undefined
}

/** `aegis serve FILE|--demo`: resolves to the exit code once a signal has stopped it. */
export async function serve(args: ServeArgs): Promise<number> {
  const { io } = args
  const slot = workerSlot()
  const root = createLogger({ format: args.format, level: args.level })
  const logger = slot === undefined ? root : root.child({ worker: slot })
  const env = io.env ?? process.env
  let upstream: DemoUpstream | undefined
  let loaded: LoadedConfig
  const source = args.file ?? 'demo config'
  try {
    if (args.file === undefined) {
      upstream = await startDemoUpstream()
      logger.info({ upstream: upstream.url }, 'demo upstream started')
      loaded = parseConfigText(DEMO_CONFIG, { source, env: { AEGIS_DEMO_UPSTREAM: upstream.url } })
    } else {
      loaded = await loadConfigFile(args.file, { env })
    }
  } catch (err) {
    await upstream?.close()
    if (!(err instanceof AegisConfigError)) throw err
    printIssues(io, err, source)
    return 1
  }

  if (args.workers !== undefined && slot === undefined) {
    // The primary: checks the file once (a bad one fails here, before any fork), then supervises.
    let config: AegisConfig
    try {
      config = parseOptions({ ...loaded.options, logger: SILENT })
    } catch (err) {
      if (!(err instanceof AegisConfigError)) throw err
      printIssues(io, err, source)
      return 1
    }
    const problem = workersProblem(config, args.workers)
    if (problem !== undefined) {
      io.stderr(`${source}: ${problem}\n`)
      return 1
    }
    return await supervise({ workers: args.workers, logger, drainMs: config.closeTimeout + 5_000, source })
  }

  let gateway: RunningGateway
  try {
    gateway = await startGateway({
      options: forSlot(loaded.options, slot),
      port: args.port,
      host: args.host,
      logger,
    })
  } catch (err) {
    await upstream?.close()
    if (err instanceof AegisConfigError) {
      printIssues(io, err, source)
      return 1
    }
    const code = (err as NodeJS.ErrnoException).code
    logger.error(
      { err, port: args.port, host: args.host },
      `cannot listen on ${args.host}:${args.port}${code === undefined ? '' : ` (${code})`}`,
    )
    return 1
  }
  const config = gateway.aegis.config
  const admin = await gateway.aegis.admin?.ready
  const adminUrl = admin === undefined ? undefined : urlOf(admin)
  logger.info(
    {
      url: gateway.url,
      config: source,
      hash: loaded.hash,
      routes: config.proxy.map((r) => ({ prefix: r.prefix, upstreams: r.upstreams.length })),
      ...(adminUrl === undefined ? {} : { admin: adminUrl }),
    },
    // A worker's line does not say "listening": the primary's does, once all are ready.
    slot === undefined ? `aegis listening on ${gateway.url}` : `worker ${slot} serving ${gateway.url}`,
  )
  if (upstream !== undefined) io.stdout(`\n${demoCommands(gateway.url)}\n`)
  // The file is watched (editors' rename saves included) and read again on SIGHUP or through the
  // admin API: a change applies without a restart, a broken file is refused and the old one runs on.
  const watcher =
    args.file === undefined
      ? undefined
      : watchConfig(gateway.aegis, args.file, {
          // The same logger as at start: the logger is one of the options a reload cannot change.
          load: (file) => forSlot({ ...loadConfigFileSync(file, { env }).options, logger }, slot),
          // A worker's SIGHUP comes from the primary, as a message (a terminal's hangup would reach both).
          signal: slot === undefined ? 'SIGHUP' : false,
          logger,
        })

  // One signal drains (in-flight requests finish, up to closeTimeout); a second one stops at once.
  // Not in a worker: a terminal's Ctrl-C or systemd's SIGTERM reach it and the primary together,
  // and the primary's stop follows; the primary kills a worker that does not drain in time.
  return await new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping && slot !== undefined) return
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting without waiting')
        resolve(1)
        return
      }
      stopping = true
      watcher?.close()
      logger.info({ signal }, 'shutting down: draining in-flight requests')
      // Past the drain's own bound, something hangs: give up rather than hold the process.
      const deadline = setTimeout(() => {
        logger.error({ closeTimeout: config.closeTimeout }, 'shutdown did not finish in time')
        resolve(1)
      }, config.closeTimeout + 5_000)
      deadline.unref()
      void gateway
        .close()
        .then(() => upstream?.close())
        .then(
          () => {
            clearTimeout(deadline)
            process.off('SIGTERM', stop)
            process.off('SIGINT', stop)
            logger.info({}, 'stopped')
            resolve(0)
          },
          (err: unknown) => {
            clearTimeout(deadline)
            logger.error({ err }, 'shutdown failed')
            resolve(1)
          },
        )
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
    if (slot !== undefined) {
      process.on('message', (message: ToWorker) => {
        if (message?.aegis === 'stop') stop('SIGTERM')
        else if (message?.aegis === 'reload') void watcher?.reload({ source: 'signal' })
      })
      tellPrimary({
        aegis: 'ready',
        url: gateway.url,
        ...(adminUrl === undefined ? {} : { admin: adminUrl }),
      })
    }
  })
}
