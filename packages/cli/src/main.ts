import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import type { LevelWithSilent } from 'pino'
import pkg from '../package.json' with { type: 'json' }
import type { CliIo } from './commands.js'
import type { LogFormat } from './logger.js'

export type { CliIo } from './commands.js'

/** pino's levels (logger.ts imports pino: kept out of the path of --help). */
const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

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
  -w, --workers N      Run N worker processes (node:cluster) on the one port, or
                       'auto' for one per CPU; they share limits through the
                       config's Redis store (required when the limiter is on).
                       A worker that dies is replaced; SIGUSR2 restarts them one
                       by one; SIGHUP reloads the file in every worker
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
        workers: { type: 'string', short: 'w' },
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
      // The commands load core and pino (a second or so): not for --help or a usage error.
      const { validate } = await import('./commands.js')
      return await validate(rest[0] as string, io)
    }
    if (command === 'serve') {
      if (values.demo === true ? rest.length !== 0 : rest.length !== 1)
        throw new UsageError(
          values.demo === true ? 'serve --demo takes no FILE' : 'serve takes one FILE (or --demo)',
        )
      if (values.demo === true && values.workers !== undefined)
        throw new UsageError('serve --demo runs in one process (--workers needs a FILE with a Redis store)')
      const { serve } = await import('./commands.js')
      return await serve({
        file: values.demo === true ? undefined : rest[0],
        port: portOf(values.port),
        host: values.host ?? SERVE_DEFAULTS.host,
        level: levelOf(values['log-level']),
        format: formatOf(values['log-format']),
        workers: workersOf(values.workers),
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

function workersOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (value === 'auto') return availableParallelism()
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 1 || n > 256)
    throw new UsageError(`--workers expects 1 to 256 or 'auto', got '${value}'`)
  return n
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
