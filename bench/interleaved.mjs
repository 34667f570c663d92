/**
 * What one configuration adds to another, in one server process (`pnpm bench:interleaved`).
 *
 *   node bench/interleaved.mjs --pair fastify-aegis-noanomaly,fastify-aegis [--seconds 60]
 *     [--phase-ms 50] [--warmup 5] [--connections 50] [--pin] [--json FILE]
 *   node bench/interleaved.mjs --gateway --pair fastify-aegis,aegis-serve [--body small|large] …
 *
 * The method is lib/interleave.mjs' (run.mjs uses it too, for its comparisons in one
 * process). With `--gateway`, the pair is two of the Aegis gateways forwarding to one
 * backend: the report then adds each one's req/s over its phases.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from './lib/args.mjs'
import { interleave, interleavedLines, pairOf, serve } from './lib/interleave.mjs'

const { values } = parseArgs({
  args: scriptArgs(),
  options: {
    pair: { type: 'string' },
    serve: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    'phase-ms': { type: 'string', default: '50' },
    gateway: { type: 'boolean', default: false },
    backend: { type: 'string' },
    body: { type: 'string', default: 'small' },
    warmup: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    pin: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
})

async function main() {
  const [seconds, warmup, connections, phaseMs] = [
    values.seconds,
    values.warmup,
    values.connections,
    values['phase-ms'],
  ].map(Number)
  pairOf(values.pair, values.gateway)
  console.log(
    `${values.pair.replace(',', ' (A) and ')} (B) in one process, switched every ${phaseMs} ms; ` +
      `wrk -c${connections} ${warmup} s warm-up + ${seconds} s. Node ${process.version}.`,
  )
  const result = await interleave({
    pair: values.pair,
    seconds,
    phaseMs,
    warmup,
    connections,
    pin: values.pin,
    gateway: values.gateway,
    body: values.body,
  })
  console.log(`\n${interleavedLines(result).join('\n')}`)
  const file =
    values.json ??
    fileURLToPath(new URL(`results/interleaved-${result.date.replace(/[:.]/g, '-')}.json`, import.meta.url))
  mkdirSync(fileURLToPath(new URL('results/', import.meta.url)), { recursive: true })
  writeFileSync(file, JSON.stringify(result, null, 2))
  console.log(`Results: ${file}`)
}

if (values.serve !== undefined)
  await serve({
    pair: values.serve,
    phaseMs: Number(values['phase-ms']),
    gateway: values.gateway,
    backendPort: values.backend,
  })
else await main()
