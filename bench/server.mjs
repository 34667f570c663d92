/**
 * One measured server: `node server.mjs <variant>`, spawned by run.mjs with an
 * IPC channel. It listens on 127.0.0.1 on a free port, reports the port, and
 * answers `cpu` messages with its own process.cpuUsage() and `probe` messages
 * with the variant's own probe, if any; `heap-start` and `heap-stop` bracket a
 * window of allocation sampling (bench/allocations.mjs). The runner asks only right before and
 * right after the measured window, so the sampling costs nothing while the
 * load runs and never goes through the HTTP stack measured.
 */
import { aegisImports } from './lib/aegis.mjs'
import { answerHeapSampling } from './lib/heap.mjs'
import { variants } from './variants.mjs'

const variant = variants.find((v) => v.name === process.argv[2])
if (variant === undefined || process.send === undefined) {
  throw new Error(`usage: run by bench/run.mjs as "server.mjs <variant>"; got ${process.argv[2]}`)
}

const server = await variant.start()

process.on('message', (message) => {
  if (message === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage() })
  answerHeapSampling(message)
  if (message === 'probe') {
    // A probe that throws is a problem of the run, not a crash of the server.
    Promise.resolve()
      .then(() => variant.probe?.() ?? { problems: [] })
      .then(
        (result) => process.send({ type: 'probe', ...result }),
        (err) => process.send({ type: 'probe', problems: [`probe failed: ${err.message}`] }),
      )
  }
})
// The runner gone (crashed, killed) means nobody will stop us: leave with it.
process.on('disconnect', () => process.exit(0))

// Where Aegis came from: an A/B run checks each server ran the build it meant.
process.send({ type: 'ready', port: server.address().port, aegis: await aegisImports() })
