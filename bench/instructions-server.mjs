/**
 * One server for the instruction count (`node instructions-server.mjs <variant> <n>`),
 * run under callgrind by instructions.mjs: it prints its port, serves exactly
 * `n` requests, then exits so callgrind reports the instructions executed.
 */
import { variants } from './variants.mjs'

const [name, count] = process.argv.slice(2)
const variant = variants.find((v) => v.name === name)
const limit = Number(count)
if (variant === undefined || !Number.isInteger(limit) || limit < 1) {
  throw new Error(`usage: instructions-server.mjs <variant> <requests>; got ${name} ${count}`)
}

const server = await variant.start()
let finished = 0
server.on('request', (_req, res) => {
  res.once('finish', () => {
    if (++finished === limit) setImmediate(() => process.exit(0))
  })
})
process.stdout.write(`port ${server.address().port}\n`)
