/**
 * What the memory limiter adds to `aegis.admit()` for clients it already
 * knows (`node bench/limiter-admit.mjs`): two Aegis instances in one process,
 * limiter on (limit 10⁹ per minute: every request counted, none refused) and
 * off, timed in alternating rounds over the same 4,096 client addresses. Each
 * request is a fresh object dropped at once, as a server drops it, so its
 * garbage dies young. The figure is the paired median of (on − off) per
 * request over the rounds after the warm-up ones: a sub-microsecond cost that
 * wrk's server-CPU figures cannot resolve. Uses the packages' built dist/.
 */
import { parseArgs } from 'node:util'
import { createAegis } from '@aegis/core'
import { scriptArgs } from './lib/args.mjs'
import { hasHeader, requestFrom } from './lib/admit.mjs'

const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    rounds: { type: 'string', default: '24' },
    warmup: { type: 'string', default: '4' },
    requests: { type: 'string', default: '200000' },
    metrics: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (values.help) {
  console.log(`Usage: node bench/limiter-admit.mjs [--rounds 24] [--warmup 4] [--requests 200000] [--metrics]

  --metrics   keep Aegis' metrics on (the default of aegis()); off here by default,
              so the figure is the limiter alone`)
  process.exit(0)
}
const rounds = Number(values.rounds)
const warmup = Number(values.warmup)
const requests = Number(values.requests)
if (![rounds, warmup, requests].every(Number.isInteger) || rounds <= warmup || requests < 1)
  throw new Error('--rounds must exceed --warmup; all three are positive integers')

const known = Array.from({ length: 4096 }, (_, j) => `172.16.${j >>> 8}.${j & 255}`)
const metrics = values.metrics ? undefined : false
const on = createAegis({ limiter: { points: 1e9, duration: 60 }, metrics })
const off = createAegis({ limiter: false, metrics })

/** ns per admit() over `requests` requests; checks every 256th answer (a check per request would weigh more than the limiter). */
function round(aegis, limited) {
  let wrong = 0
  const t0 = process.hrtime.bigint()
  for (let j = 0; j < requests; j++) {
    const state = aegis.admit(requestFrom(known[j & 4095]))
    if ((j & 255) === 0 && (state.rejection !== undefined || hasHeader(state, 'ratelimit') !== limited))
      wrong++
  }
  const ns = Number(process.hrtime.bigint() - t0) / requests
  if (wrong > 0) throw new Error(`${wrong} requests were refused or wrongly limited`)
  return ns
}

const onNs = []
const offNs = []
for (let r = 0; r < rounds; r++) {
  offNs.push(round(off, false))
  onNs.push(round(on, true))
}
await Promise.all([on.close(), off.close()])

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const kept = (xs) => xs.slice(warmup)
const deltas = kept(onNs).map((x, i) => x - kept(offNs)[i])
console.log(
  `Node ${process.version}, ${rounds} rounds (${warmup} warm-up) × ${requests} requests, metrics ${values.metrics ? 'on' : 'off'}`,
)
console.log(`admit(), limiter off: ${median(kept(offNs)).toFixed(0)} ns (median)`)
console.log(`admit(), limiter on:  ${median(kept(onNs)).toFixed(0)} ns (median)`)
console.log(
  `limiter adds ${median(deltas).toFixed(0)} ns per request (paired median; ${Math.min(...deltas).toFixed(0)} to ${Math.max(...deltas).toFixed(0)})`,
)
