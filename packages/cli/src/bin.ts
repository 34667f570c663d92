#!/usr/bin/env node
import cluster from 'node:cluster'
import { main } from './main.js'

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
    // A worker's IPC channel to the primary would hold it: it is done, everything closed.
    if (cluster.isWorker) process.exit(code)
    // Everything is closed by now; a handle something left open must not hold the process.
    setTimeout(() => process.exit(code), 2_000).unref()
  },
  (err: unknown) => {
    console.error(err)
    process.exit(1)
  },
)
