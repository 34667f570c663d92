/**
 * The spread of fresh processes (`node bench/spread.mjs --only fastify,fastify-aegis
 * --processes 10`): each variant is started `--processes` times, each time in a
 * new Node process, warmed with `--warmup` requests and measured over the next
 * `--requests` (`--connections` keep-alive connections, 50 as bench/run.mjs'
 * wrk, one request at a time on each). The server measures its own CPU time over that
 * window (`process.cpuUsage()`, all its threads) and reports µs per request.
 * Variants take turns, so a noisy minute lands on all of them. Prints each
 * process' figure, sorted, and min / median / max: a process that V8 sent
 * down a slow path shows as an outlier here, where a median hides it.
 */
import { spawn } from 'node:child_process'
import { Agent, get } from 'node:http'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scriptArgs } from './lib/args.mjs'
import { selectVariants, variants } from './variants.mjs'

if (process.argv[2] === '--serve') {
  // The measured server: `--serve <variant> <warmup> <requests>`.
  const [, , , name, warmup, requests] = process.argv
  const server = await variants.find((v) => v.name === name).start()
  const [from, to] = [Number(warmup), Number(warmup) + Number(requests)]
  let finished = 0
  let start
  server.on('request', (_req, res) => {
    res.once('finish', () => {
      finished++
      if (finished === from) start = process.cpuUsage()
      else if (finished === to) {
        const { user, system } = process.cpuUsage(start)
        process.stdout.write(`cpu ${(user + system) / (to - from)}\n`)
        setImmediate(() => process.exit(0))
      }
    })
  })
  process.stdout.write(`port ${server.address().port}\n`)
} else {
  const { values } = parseArgs({
    args: scriptArgs(),
    options: {
      only: { type: 'string', default: 'fastify,fastify-aegis' },
      processes: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '20000' },
      requests: { type: 'string', default: '30000' },
      // As many as bench/run.mjs' wrk opens: several requests arrive per turn of the event loop.
      connections: { type: 'string', default: '50' },
      'node-flags': { type: 'string', default: '' },
    },
  })
  const selected = selectVariants(values.only)
  const nodeFlags = values['node-flags'].split(' ').filter(Boolean)
  const [warmup, requests, connections] = [values.warmup, values.requests, values.connections].map(Number)
  const results = new Map(selected.map((v) => [v.name, []]))
  for (let i = 0; i < Number(values.processes); i++)
    for (const v of selected) {
      const us = await measure(v.name)
      results.get(v.name).push(us)
      console.log(`${v.name} #${i + 1}: ${us.toFixed(1)} µs/request`)
    }
  console.log(
    '\n| Variant | min | median | max | every process (sorted) |\n| --- | ---: | ---: | ---: | --- |',
  )
  for (const [name, all] of results) {
    const s = [...all].sort((a, b) => a - b)
    const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
    console.log(
      `| ${name} | ${s[0].toFixed(1)} | ${median.toFixed(1)} | ${s.at(-1).toFixed(1)} | ${s.map((x) => x.toFixed(1)).join(', ')} |`,
    )
  }

  /** One fresh server process: its CPU µs per request over the measured window. */
  function measure(name) {
    return new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [...nodeFlags, fileURLToPath(import.meta.url), '--serve', name, String(warmup), String(requests)],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
      let stderr = ''
      child.stderr.on('data', (d) => (stderr += d))
      const deadline = setTimeout(() => child.kill('SIGKILL'), 300_000)
      let stdout = ''
      child.stdout.on('data', (d) => {
        stdout += d
        const m = /port (\d+)/.exec(stdout)
        if (m && !child.loading) {
          child.loading = true
          load(Number(m[1]), warmup + requests).catch(reject)
        }
      })
      child.once('error', reject)
      child.once('exit', (code) => {
        clearTimeout(deadline)
        const m = /cpu ([\d.]+)/.exec(stdout)
        if (code !== 0 || !m) reject(new Error(`${name} failed: exit ${code}\n${stderr.slice(-2000)}`))
        else resolve(Number(m[1]))
      })
    })
  }

  /** `n` GET / over `connections` keep-alive connections, each request after the previous answer on it. */
  async function load(port, n) {
    const agent = new Agent({ keepAlive: true, maxSockets: connections })
    let sent = 0
    const worker = async () => {
      while (sent < n) {
        sent++
        await new Promise((resolve, reject) => {
          get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
            if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
            res.resume()
            res.once('end', resolve)
          }).once('error', reject)
        })
      }
    }
    await Promise.all(Array.from({ length: connections }, worker))
    agent.destroy()
  }
}
