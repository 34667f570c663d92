/**
 * One server for the instruction count (`node instructions-server.mjs <variant> <n>`,
 * or `<proxy> <n> <backendPort>` for a proxy of the gateway benchmark), run
 * under callgrind by instructions.mjs: it prints its port, serves exactly `n`
 * requests, then exits so callgrind reports the instructions executed.
 */
import { proxies } from './gateway-proxies.mjs'
import { variants, virtualClock } from './variants.mjs'

const [name, count, backendPort] = process.argv.slice(2)
const start =
  backendPort === undefined
    ? variants.find((v) => v.name === name)?.start
    : name === 'backend'
      ? undefined
      : proxies[name]?.bind(undefined, `http://127.0.0.1:${backendPort}`)
const limit = Number(count)
if (start === undefined || !Number.isInteger(limit) || limit < 1) {
  throw new Error(
    `usage: instructions-server.mjs <variant> <requests> [backendPort]; got ${process.argv.slice(2).join(' ')}`,
  )
}

// instructions.mjs --clock-rate R: the anomaly engine on a clock at R requests a millisecond.
virtualClock.rate = Number(process.env.AEGIS_BENCH_CLOCK_RATE ?? 0)
const server = await start()
let finished = 0
server.on('request', (_req, res) => {
  if (virtualClock.rate > 0) virtualClock.tick()
  res.once('finish', () => {
    if (++finished === limit) setImmediate(() => process.exit(0))
  })
})
process.stdout.write(`port ${server.address().port}\n`)
