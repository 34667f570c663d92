/**
 * `aegis serve FILE --workers N`: a primary process that forks N gateway workers with
 * node:cluster, all accepting on the one listening socket. Workers share what must be
 * shared (limiter counters, anomaly blocks, history) through the Redis store of the config,
 * so the primary holds no request state: it starts the workers, replaces one that dies,
 * restarts them one by one on SIGUSR2, forwards SIGHUP (reload the file) and drains them all
 * on SIGTERM or SIGINT.
 *
 * The messages between the two sides (`ToWorker`, `FromWorker`) travel over the cluster's
 * IPC channel; each carries `aegis` so that nothing else sent there is taken for one.
 */
import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import type { AegisConfig, AegisOptions } from '@aegis/core'
import type { Logger as PinoLogger } from 'pino'

/** What the primary tells a worker. */
export type ToWorker = { readonly aegis: 'stop' } | { readonly aegis: 'reload' }
/** What a worker tells the primary. */
export type FromWorker = { readonly aegis: 'ready'; readonly url: string; readonly admin?: string }

/** The environment variable that gives a worker its slot (0 … N − 1). */
export const SLOT_ENV = 'AEGIS_WORKER_SLOT'

/** A worker that dies within this long of its start counts as a crash at start. */
const QUICK_DEATH_MS = 5_000
/** Crashes at start in a row, in one slot, after which the primary gives up. */
const MAX_QUICK_DEATHS = 5

/**
 * Why a config cannot run in N workers, or `undefined`. With the memory store every worker
 * counts on its own: a limit of 100 would let N × 100 through.
 */
export function workersProblem(config: AegisConfig, workers: number): string | undefined {
  const shared = config.store.redis !== undefined || config.store.cluster !== undefined
  if (workers > 1 && config.limiter !== false && !shared)
    return (
      `store: --workers ${workers} needs a shared store: with the memory store each worker ` +
      `counts its own limits (${workers}× looser). Set store.redis (or store.cluster), or limiter: false.`
    )
  return undefined
}

/**
 * A worker's options: its admin listener on port + slot, as N instances on one host would
 * have (each worker's state — breakers, drains, its own history — is its own). Port 0 stays
 * 0 (node:cluster hands all workers the same free port) and `listen: false` stays off.
 * Outside a worker (`slot` undefined) the options are as given.
 */
export function forSlot(options: AegisOptions, slot: number | undefined): AegisOptions {
  const admin = options.admin
  if (slot === undefined || slot === 0 || admin === undefined || admin === false || admin.listen === false)
    return options
  const listen = admin.listen ?? '127.0.0.1:9901'
  const m = typeof listen === 'number' ? null : /^(.*):(\d+)$/.exec(listen)
  const port = typeof listen === 'number' ? listen : Number(m?.[2] ?? listen)
  if (port === 0) return options
  const moved = m === null ? port + slot : `${m[1]}:${port + slot}`
  return { ...options, admin: { ...admin, listen: moved } }
}

/** The slot of this process when it is a worker, else `undefined`. */
export function workerSlot(): number | undefined {
  if (!cluster.isWorker) return undefined
  const slot = Number(process.env[SLOT_ENV])
  return Number.isInteger(slot) && slot >= 0 ? slot : 0
}

/** Tell the primary (a no-op outside a worker). */
export function tellPrimary(message: FromWorker): void {
  process.send?.(message)
}

/** The worker holding a slot, and when it started. */
interface Slot {
  readonly worker: Worker
  readonly started: number
}

export interface SuperviseOptions {
  readonly workers: number
  readonly logger: PinoLogger
  /** How long to wait for workers to drain on shutdown before killing them (closeTimeout + margin). */
  readonly drainMs: number
  /** The config file, for the log. */
  readonly source: string
}

/**
 * Run the primary: fork the workers (the same command line, `aegis serve …`, which sees
 * itself a worker) and supervise them. Resolves to the exit code once a signal has stopped
 * them all, or 1 when they cannot start.
 */
export async function supervise(o: SuperviseOptions): Promise<number> {
  const { logger, workers } = o
  // The worker runs this package's bin with the same arguments.
  cluster.setupPrimary({
    exec: fileURLToPath(new URL('./bin.js', import.meta.url)),
    args: process.argv.slice(2),
  })
  const slots: Slot[] = []
  let stopping = false
  let settle: (code: number) => void = () => {}
  const done = new Promise<number>((resolve) => (settle = resolve))
  const urls = new WeakMap<Worker, string>()

  /** Fork a worker into `slot`; resolves when it is ready, rejects when it exits first. */
  const fork = (slot: number): Promise<Worker> => {
    let worker: Worker
    try {
      worker = cluster.fork({ [SLOT_ENV]: String(slot) })
    } catch (err) {
      // EAGAIN and the like: counted as a death at start.
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    return new Promise<Worker>((resolve, reject) => {
      const onMessage = (message: FromWorker): void => {
        if (message?.aegis !== 'ready') return
        worker.off('exit', onEarlyExit)
        urls.set(worker, message.url)
        // Asked to stop before it could hear it: ask again now that it listens.
        if (stopping) send(worker, { aegis: 'stop' })
        logger.info(
          {
            worker: slot,
            workerPid: worker.process.pid,
            ...(message.admin === undefined ? {} : { admin: message.admin }),
          },
          `worker ${slot} ready`,
        )
        resolve(worker)
      }
      const onEarlyExit = (code: number | null, signal: string | null): void => {
        worker.off('message', onMessage)
        reject(new Error(`worker ${slot} exited before it was ready (${signal ?? `code ${code}`})`))
      }
      worker.on('message', onMessage)
      worker.once('exit', onEarlyExit)
    })
  }

  /** Keep `worker` in `slot`: when it dies and nobody asked it to, start another. */
  const watch = (slot: number, worker: Worker, quickDeaths: number): void => {
    const entry: Slot = { worker, started: Date.now() }
    slots[slot] = entry
    worker.once('exit', (code, signal) => {
      if (stopping || slots[slot] !== entry) return
      logger.warn(
        { worker: slot, workerPid: worker.process.pid, code, signal },
        `worker ${slot} died: starting another`,
      )
      respawn(slot, Date.now() - entry.started < QUICK_DEATH_MS ? quickDeaths + 1 : 0)
    })
  }
  /** Fork into `slot` again; a worker that keeps dying at start waits longer each time, then the primary gives up. */
  const respawn = (slot: number, deaths: number): void => {
    if (stopping) return
    if (deaths >= MAX_QUICK_DEATHS) {
      logger.error({ worker: slot, deaths }, `worker ${slot} keeps dying at start: stopping`)
      void stopAll(1)
      return
    }
    setTimeout(
      () => {
        if (stopping) return
        fork(slot).then(
          (next) => watch(slot, next, deaths),
          (err: unknown) => {
            logger.error({ err, worker: slot }, `worker ${slot} could not start`)
            respawn(slot, deaths + 1)
          },
        )
      },
      deaths === 0 ? 0 : Math.min(5_000, 100 * 2 ** deaths),
    )
  }

  /** Ask every worker to drain and wait for them (killed past `drainMs`). */
  const stopAll = async (code: number): Promise<void> => {
    if (stopping) return
    stopping = true
    await Promise.all(living().map((w) => stopWorker(w, o.drainMs)))
    process.off('SIGTERM', onStop)
    process.off('SIGINT', onStop)
    process.off('SIGHUP', onReload)
    process.off('SIGUSR2', onRestart)
    logger.info({}, 'stopped')
    settle(code)
  }

  let restarting = false
  /** Replace the workers one at a time: the new one is ready before the old one drains. */
  const restartAll = async (): Promise<void> => {
    if (restarting || stopping) return
    restarting = true
    logger.info({ workers }, 'restarting workers one by one')
    try {
      for (let slot = 0; slot < workers && !stopping; slot++) {
        const old = slots[slot]
        const next = await fork(slot)
        watch(slot, next, 0)
        if (old !== undefined) await stopWorker(old.worker, o.drainMs)
      }
      if (!stopping) logger.info({ workers }, 'workers restarted')
    } catch (err) {
      logger.error({ err }, 'restart stopped: a new worker did not start; the others keep running')
    } finally {
      restarting = false
    }
  }

  const onStop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without waiting')
      for (const w of living()) w.process.kill('SIGKILL')
      settle(1)
      return
    }
    logger.info({ signal }, 'shutting down: draining the workers')
    void stopAll(0)
  }
  const onReload = (): void => {
    for (const w of living()) send(w, { aegis: 'reload' })
  }
  const onRestart = (): void => void restartAll()

  // Before the first fork: a signal during the start must not meet Node's default (exit).
  process.on('SIGTERM', onStop)
  process.on('SIGINT', onStop)
  process.on('SIGHUP', onReload)
  process.on('SIGUSR2', onRestart)
  try {
    const started = await Promise.all(Array.from({ length: workers }, (_, slot) => fork(slot)))
    if (!stopping) {
      started.forEach((worker, slot) => watch(slot, worker, 0))
      const url = urls.get(started[0] as Worker)
      logger.info({ url, config: o.source, workers }, `aegis listening on ${url} (${workers} workers)`)
    }
  } catch (err) {
    if (!stopping) {
      logger.error({ err }, 'the workers did not start')
      void stopAll(1)
    }
  }
  return await done
}

/** The workers not dead yet. */
const living = (): Worker[] =>
  Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead())

function send(worker: Worker, message: ToWorker): void {
  if (worker.isDead() || !worker.isConnected()) return
  worker.send(message, (err: Error | null) => void err) // a worker that just died: its exit handler acts
}

/** Ask `worker` to drain and exit; kill it past `ms`. */
function stopWorker(worker: Worker, ms: number): Promise<void> {
  if (worker.isDead()) return Promise.resolve()
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => worker.process.kill('SIGKILL'), ms)
    timer.unref()
    worker.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    send(worker, { aegis: 'stop' })
  })
}
