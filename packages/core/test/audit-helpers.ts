/**
 * Whether better-sqlite3 loads in this Node.js. It is a native module, built by `pnpm
 * install` for the Node.js that ran it: under another major version (the Node 24 run of
 * a tree installed with Node 20) it refuses to load with an ABI mismatch. The SQLite
 * tests are skipped then, with a line saying so and how to build it for this Node.js —
 * outside CI only; any other failure to load, and any failure at all in CI, fails them.
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export const sqliteLoads: boolean = (() => {
  try {
    const Database = require('better-sqlite3') as new (path: string) => { close(): void }
    new Database(':memory:').close()
    return true
  } catch (err) {
    const message = (err as Error).message
    if (!/NODE_MODULE_VERSION|compiled against a different Node\.js version/.test(message)) throw err
    // CI installs and tests with one Node.js: there the SQLite tests the issue asks for never skip.
    if (process.env.CI !== undefined && process.env.CI !== '') throw err
    console.warn(
      `SQLite audit tests skipped: better-sqlite3 was built for another Node.js ABI than ${process.version} (${message.split('\n')[0]}). Run \`pnpm rebuild better-sqlite3\` with this Node.js to run them.`,
    )
    return false
  }
})()
