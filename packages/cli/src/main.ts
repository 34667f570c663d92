import { parseArgs } from 'node:util'
import {
  AegisConfigError,
  createAegis,
  formatConfigIssue,
  loadConfigFile,
  parseConfigText,
  parseOptions,
  type AegisConfig,
  type LoadedConfig,
} from '@aegis/core'
import type { LevelWithSilent } from 'pino'
import pkg from '../package.json' with { type: 'json' }
import { DEMO_CONFIG, demoCommands, startDemoUpstream, type DemoUpstream } from './demo.js'
import { startGateway, type RunningGateway } from './gateway.js'
import { createLogger, LOG_LEVELS, type LogFormat } from './logger.js'

/** Where the CLI writes what is not a log line (help, validate's answer, usage errors). */
export interface CliIo {
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  /** `process.env` by default: `${NAME}` references in config files are read from it. */
  readonly env?: Readonly<Record<string, string | undefined>>
}

const processIo: CliIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
}

export const HELP = `Usage: aegis <command> [options]

Commands:
  serve FILE       Run a standalone gateway from a YAML or JSON config file
  serve --demo     Start a sample upstream on loopback and a gateway in front of it
  validate FILE    Check a config file: exit 0 with a summary, or 1 with every
                   error as FILE:LINE:COLUMN
  help [COMMAND]   Show this help

Options of serve:
  -p, --port N         Port to listen on (default 8080; 0 picks a free one)
      --host H         Address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)
      --demo           Serve the demo config in front of a sample upstream (no FILE)
      --log-level L    trace, debug, info, warn, error, fatal or silent (default info)
      --log-format F   auto (pretty on a terminal, JSON otherwise), json or pretty

Options:
  -h, --help           Show help
  -v, --version        Show the version

The config file holds createAegis() options (YAML, or JSON when it ends in .json);
\${NAME} and \${NAME:-default} in its values are read from the environment.
SIGTERM or SIGINT (Ctrl-C) drains in-flight requests and exits 0.
Docs: https://github.com/aegis-js/aegis/blob/main/docs/operations.md
`

const SERVE_DEFAULTS = { port: 8080, host: '127.0.0.1' } as const

class UsageError extends Error {}

/**
 * Run the `aegis` command with `argv` (without `node` and the script). Resolves to
 * the exit code: `serve` resolves once a signal has stopped the gateway.
 *
 * @example
 * process.exitCode = await main(process.argv.slice(2))
 */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        port: { type: 'string', short: 'p' },
        host: { type: 'string' },
        demo: { type: 'boolean' },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    })
  } catch (err) {
    return usage(io, (err as Error).message)
  }
  const { values, positionals } = parsed
  if (values.version === true) {
    io.stdout(`${pkg.version}\n`)
    return 0
  }
  const [command, ...rest] = positionals
  if (values.help === true || command === undefined || command === 'help') {
    io.stdout(HELP)
    return command === undefined && values.help !== true ? 1 : 0
  }
  try {
    if (command === 'validate') {
      if (rest.length !== 1) throw new UsageError('validate takes one FILE')
      return await validate(rest[0] as string, io)
    }
    if (command === 'serve') {
      if (values.demo === true ? rest.length !== 0 : rest.length !== 1)
        throw new UsageError(
          values.demo === true ? 'serve --demo takes no FILE' : 'serve takes one FILE (or --demo)',
        )
      return await serve({
        file: values.demo === true ? undefined : rest[0],
        port: portOf(values.port),
        host: values.host ?? SERVE_DEFAULTS.host,
        level: levelOf(values['log-level']),
        format: formatOf(values['log-format']),
        io,
      })
    }
    throw new UsageError(`unknown command '${command}'`)
  } catch (err) {
    if (err instanceof UsageError) return usage(io, err.message)
    throw err
  }
}

function usage(io: CliIo, message: string): number {
  io.stderr(`aegis: ${message}\nRun 'aegis --help' for usage.\n`)
  return 2
}

function portOf(value: string | undefined): number {
  if (value === undefined) return SERVE_DEFAULTS.port
  const port = Number(value)
  if (!/^\d+$/.test(value) || port > 65_535) throw new UsageError(`--port expects 0 to 65535, got '${value}'`)
  return port
}

function levelOf(value: string | undefined): LevelWithSilent {
  if (value === undefined) return 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(value))
    throw new UsageError(`--log-level expects one of ${LOG_LEVELS.join(', ')}, got '${value}'`)
  return value as LevelWithSilent
}

function formatOf(value: string | undefined): LogFormat {
  if (value === undefined) return 'auto'
  if (value !== 'auto' && value !== 'json' && value !== 'pretty')
    throw new UsageError(`--log-format expects auto, json or pretty, got '${value}'`)
  return value
}

/** Print every issue of a refused config, one `FILE:LINE:COLUMN path: problem` line each. */
function printIssues(io: CliIo, err: AegisConfigError, source: string): void {
  const lines = err.issues.map((i) => formatConfigIssue(i.source === undefined ? { ...i, source } : i))
  io.stderr(
    `${lines.join('\n')}\n${source}: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'}\n`,
  )
}

async function validate(file: string, io: CliIo): Promise<number> {
  let loaded: LoadedConfig
  try {
    loaded = await loadConfigFile(file, { env: io.env ?? process.env })
  } catch (err) {
    if (!(err instanceof AegisConfigError)) throw err
    printIssues(io, err, file)
    return 1
  }
  // The checks only a built instance makes (two limiter policies with one name): built here
  // when that connects nowhere, i.e. without a Redis store, and closed at once.
  if (loaded.options.store === undefined) {
    try {
      await createAegis({ ...loaded.options, logger: SILENT }).close()
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
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`
  return `${plural(routes, 'proxy route')}, ${plural(upstreams, 'upstream')}; ${on.length === 0 ? 'no engine' : on.join(', ')}`
}

interface ServeArgs {
  readonly file: string | undefined
  readonly port: number
  readonly host: string
  readonly level: LevelWithSilent
  readonly format: LogFormat
  readonly io: CliIo
}

async function serve(args: ServeArgs): Promise<number> {
  const { io } = args
  const logger = createLogger({ format: args.format, level: args.level })
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

  let gateway: RunningGateway
  try {
    gateway = await startGateway({
      options: loaded.options,
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
  logger.info(
    {
      url: gateway.url,
      config: source,
      hash: loaded.hash,
      routes: config.proxy.map((r) => ({ prefix: r.prefix, upstreams: r.upstreams.length })),
    },
    `aegis listening on ${gateway.url}`,
  )
  if (upstream !== undefined) io.stdout(`\n${demoCommands(gateway.url)}\n`)

  // One signal drains (in-flight requests finish, up to closeTimeout); a second one stops at once.
  return await new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting without waiting')
        resolve(1)
        return
      }
      stopping = true
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
  })
}
