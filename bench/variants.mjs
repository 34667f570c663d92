/**
 * The measured apps. Every variant serves the same hello-world JSON on GET /;
 * only the middleware in front of it changes. Frameworks and middleware are
 * imported lazily inside `start`, so the runner can read this list without
 * loading any of them and each server process loads only its own stack.
 */
import { createServer } from 'node:http'
import { importAegis } from './lib/aegis.mjs'

export const HELLO = { hello: 'world' }

// Far above anything a run can send: the limiters do their bookkeeping on
// every request but never answer 429. @fastify/rate-limit ignores non-finite
// limits (it falls back to its default of 1000), hence a finite number.
const NEVER = 1_000_000_000
const WINDOW_MS = 60_000

// Aegis with its defaults, except the limit: its default limiter (1000 per
// minute per client) would answer 429 to wrk, which sends everything from one
// address. Same limit and window as the peers.
const AEGIS = { limiter: { points: NEVER, duration: WINDOW_MS / 1000 } }
// The same on the shared store: one Lua script per request, auto-pipelined by
// ioredis. A prefix of its own per server process, so no run sees another's keys.
const aegisOnRedis = () => ({
  ...AEGIS,
  store: {
    redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    prefix: `aegis-bench:${process.pid}:${Date.now().toString(36)}:`,
  },
})

// A security header every guarded variant sets, and the limiters' header: the
// runner checks them once per run so a variant can't silently lose its stack.
const SECURITY_HEADER = 'x-content-type-options'
const LIMIT_HEADER = 'x-ratelimit-limit'
// Aegis' limiter answers with the IETF draft's fields; the policy names the limit.
const AEGIS_LIMIT = {
  'ratelimit-policy': /^"default";q=1000000000;w=60$/,
  ratelimit: /^"default";r=\d+;t=\d+$/,
}
const PEER_LIMIT = { [LIMIT_HEADER]: /^1000000000$/ }
// Every spelling a limiter here could answer with: a variant without one sends none.
const ANY_LIMIT_HEADER = ['ratelimit', 'ratelimit-policy', 'ratelimit-limit', LIMIT_HEADER]

/** Listen on a free port of the loopback interface only. */
export const listen = (server) =>
  new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })

/**
 * `mount(app)` adds the stack under test; it may return an object with
 * `attach(server)` (Aegis' documented setup for Express and Koa).
 */
async function express(mount) {
  const { default: express } = await import('express')
  const app = express()
  const guard = await mount?.(app)
  app.get('/', (_req, res) => {
    res.json(HELLO)
  })
  const server = createServer(app)
  guard?.attach(server)
  return listen(server)
}

async function fastify(mount) {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  await mount?.(app)
  app.get('/', async () => HELLO)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return app.server
}

async function koa(mount) {
  const { default: Koa } = await import('koa')
  const app = new Koa()
  const guard = await mount?.(app)
  app.use((ctx) => {
    ctx.body = HELLO
  })
  // Koa composes its middleware when `callback()` is called: mount first.
  const server = createServer(app.callback())
  guard?.attach(server)
  return listen(server)
}

/** Until the Aegis instance's Redis connection is usable: a run must not start on the insurance. */
async function redisReady(core) {
  const deadline = Date.now() + 5_000
  while (core.store?.up !== true) {
    if (Date.now() > deadline) throw new Error('the Redis store is not up after 5 s (is Redis running?)')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * Proof that Redis decided every request so far: no store error and no
 * decision by the in-memory insurance, read from Aegis' own metrics; and the
 * Redis server's CPU time (`INFO cpu`), which the server's CPU figure leaves out.
 * Asked by the runner right before and right after the measured window.
 */
async function redisProbe(core) {
  const problems = []
  const metrics = (await core.scrapeMetrics())?.body ?? ''
  for (const m of metrics.matchAll(
    /^(\w*(?:limiter_insurance_total|store_errors_total))(\{[^}]*\})? (\S+)$/gm,
  )) {
    if (Number(m[3]) > 0) problems.push(`${m[1]}${m[2] ?? ''} = ${m[3]}`)
  }
  if (core.store?.up !== true) problems.push('Redis store down')
  const info = await core.store.client.info('cpu')
  const seconds = (field) => Number(new RegExp(`^${field}:([\\d.]+)`, 'm').exec(info)?.[1])
  return { problems, redisCpuUs: (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6 }
}

// The Aegis core of the variant this process serves, for its probe.
let core

/** Aegis with `options()` (built in the server process) on the framework's app; waits for Redis when it has a store. */
const withAegis = {
  express: (options, attachOptions) =>
    express(async (app) => {
      const { aegis } = await importAegis('express')
      const shield = aegis(options())
      core = shield.core
      if (core.store !== undefined) await redisReady(core)
      app.use(shield)
      // `false`: mounted only, as most apps do (the middleware shapes from the first request).
      return attachOptions === false
        ? undefined
        : { attach: (server) => shield.attach(server, attachOptions) }
    }),
  fastify: (options) =>
    fastify(async (app) => {
      const { aegis } = await importAegis('fastify')
      await app.register(aegis, options())
      core = app.aegis
      if (core.store !== undefined) await redisReady(core)
    }),
  koa: (options) =>
    koa(async (app) => {
      const { aegis } = await importAegis('koa')
      const shield = aegis(options())
      core = shield.core
      app.use(shield)
      return shield
    }),
}

/**
 * A Fastify app's request handler, `mount` having set the app up: its own server is never
 * listened on, the handler is what a shared server calls.
 */
export async function fastifyHandler(options, mount) {
  const { default: Fastify } = await import('fastify')
  let handler
  const app = Fastify({
    ...options,
    serverFactory: (h) => {
      handler = h
      return createServer()
    },
  })
  await mount(app)
  await app.ready()
  return handler
}

/**
 * The variant's app as a request handler, not listening: interleaved.mjs serves two of them
 * from one server. Nothing is attached to a server (two instances would both answer its
 * parser errors): what differs between two such handlers is what their options turn on.
 */
async function aegisHandler(framework, options) {
  if (framework === 'fastify') {
    const { aegis } = await importAegis('fastify')
    return fastifyHandler({ logger: false }, async (app) => {
      await app.register(aegis, options())
      app.get('/', async () => HELLO)
    })
  }
  if (framework === 'koa') {
    const { default: Koa } = await import('koa')
    const { aegis } = await importAegis('koa')
    const app = new Koa()
    app.use(aegis(options()))
    app.use((ctx) => {
      ctx.body = HELLO
    })
    return app.callback()
  }
  const { default: express } = await import('express')
  const { aegis } = await importAegis('express')
  const app = express()
  app.use(aegis(options()))
  app.get('/', (_req, res) => {
    res.json(HELLO)
  })
  return app
}

/**
 * The anomaly engine's clock in instructions.mjs' `--clock-rate R` runs. Under callgrind a
 * server runs some 50 times slower than under wrk, so the engine's work driven by its clock
 * (each client scored once a second, the campaign buckets, the forest regrown every 30 s)
 * would fall on 50 times fewer requests. With a rate set, the engine reads this clock instead,
 * which instructions-server.mjs advances by 1/R ms a request (R: requests a millisecond at
 * wrk's rate): that work falls on as many requests as it does at that rate.
 */
export const virtualClock = {
  rate: 0,
  now: Date.now(),
  tick() {
    this.now += 1 / this.rate
  },
}
const onClock = (options) => () => {
  const o = options()
  if (virtualClock.rate === 0 || o.anomaly === false) return o
  return { ...o, anomaly: { ...o.anomaly, clock: () => virtualClock.now } }
}

/**
 * An Aegis variant, its checks read off its options: with the limiter on its
 * fields are expected, without it none may appear; a store adds the probe that
 * proves Redis decided.
 */
const aegisVariant = (framework, name, label, options, attachOptions) => {
  const { limiter, store } = options()
  return {
    name,
    framework,
    stack: 'aegis',
    label,
    ...(limiter !== false
      ? { expect: [SECURITY_HEADER, 'ratelimit-policy'], expectValues: AEGIS_LIMIT }
      : { expect: [SECURITY_HEADER], expectAbsent: ANY_LIMIT_HEADER }),
    start: () => withAegis[framework](onClock(options), attachOptions),
    // For interleaved.mjs: the app's handler alone, built from the same options.
    handler: () => aegisHandler(framework, onClock(options)),
    ...(store !== undefined && { probe: () => redisProbe(core) }),
  }
}
const NO_LIMIT = () => ({ limiter: false })
// Today's defaults without the anomaly engine (on in observe mode by default): what it costs.
const NO_ANOMALY = () => ({ ...AEGIS, anomaly: false })

/**
 * @typedef {object} Variant
 * @property {string} name        CLI and results name
 * @property {'express' | 'fastify' | 'koa'} framework
 * @property {'bare' | 'floor' | 'aegis' | 'peers'} stack  what the report compares with the bare framework
 *   (`floor`: what any middleware costs, with nothing in it)
 * @property {string} label       what is in front of the handler, for the report
 * @property {string[]} expect    response headers proving the stack is mounted
 * @property {Record<string, RegExp>} [expectValues]  …and what they must say
 * @property {string[]} [expectAbsent]  response headers the stack must not send
 * @property {() => Promise<import('node:http').Server>} start  build and listen
 * @property {() => Promise<{ problems: string[], redisCpuUs?: number }>} [probe]
 *   asked in the server process right before and right after the measured
 *   window; any problem fails the run
 */

/** Express with nothing of Aegis or the peers in front of the handler: no security or limit header. */
const plainExpress = (name, stack, label, mount) => ({
  name,
  framework: 'express',
  stack,
  label,
  expect: [],
  expectAbsent: [SECURITY_HEADER, ...ANY_LIMIT_HEADER],
  start: () => express(mount),
})

/** @type {Variant[]} */
export const variants = [
  plainExpress('express', 'bare', 'Express'),
  aegisVariant('express', 'express-aegis', 'Express + Aegis', () => AEGIS),
  // What request shaping (`shield.attach(server)`, docs/performance.md) does
  // for Express alone, and Aegis without it; and the floor under any Express
  // middleware (one more router layer that calls next()). Not in a suite.
  plainExpress('express-shaped', 'floor', 'Express, requests shaped (shapeRequests)', async () => {
    const { shapeRequests } = await importAegis('core')
    return { attach: (server) => shapeRequests(server) }
  }),
  aegisVariant('express', 'express-aegis-noshape', 'Express + Aegis, requests not shaped', () => AEGIS, {
    shapeRequests: false,
  }),
  // `app.use(aegis())` and nothing else: no `attach()` (issue 14, finding 16).
  aegisVariant('express', 'express-aegis-noattach', 'Express + Aegis, never attached', () => AEGIS, false),
  plainExpress('express-noop', 'floor', 'Express + an empty middleware', (app) => {
    app.use((_req, _res, next) => next())
  }),
  {
    name: 'express-peers',
    framework: 'express',
    stack: 'peers',
    label: 'Express + helmet + express-rate-limit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    expectValues: PEER_LIMIT,
    start: () =>
      express(async (app) => {
        const { default: helmet } = await import('helmet')
        const { rateLimit } = await import('express-rate-limit')
        app.use(helmet())
        app.use(rateLimit({ windowMs: WINDOW_MS, limit: NEVER }))
      }),
  },
  {
    name: 'fastify',
    framework: 'fastify',
    stack: 'bare',
    label: 'Fastify',
    expect: [],
    expectAbsent: [SECURITY_HEADER, ...ANY_LIMIT_HEADER],
    start: () => fastify(),
  },
  aegisVariant('fastify', 'fastify-aegis', 'Fastify + Aegis', () => AEGIS),
  {
    name: 'fastify-peers',
    framework: 'fastify',
    stack: 'peers',
    label: 'Fastify + @fastify/helmet + @fastify/rate-limit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    expectValues: PEER_LIMIT,
    start: () =>
      fastify(async (app) => {
        const { default: helmet } = await import('@fastify/helmet')
        const { default: rateLimit } = await import('@fastify/rate-limit')
        await app.register(helmet)
        await app.register(rateLimit, { max: NEVER, timeWindow: WINDOW_MS })
      }),
  },
  {
    name: 'koa',
    framework: 'koa',
    stack: 'bare',
    label: 'Koa',
    expect: [],
    expectAbsent: [SECURITY_HEADER, ...ANY_LIMIT_HEADER],
    start: () => koa(),
  },
  aegisVariant('koa', 'koa-aegis', 'Koa + Aegis', () => AEGIS),
  aegisVariant('koa', 'koa-aegis-noanomaly', 'Koa + Aegis, anomaly off', NO_ANOMALY),
  {
    name: 'koa-peers',
    framework: 'koa',
    stack: 'peers',
    label: 'Koa + koa-helmet + koa-ratelimit',
    expect: [SECURITY_HEADER, LIMIT_HEADER],
    expectValues: PEER_LIMIT,
    start: () =>
      koa(async (app) => {
        const { default: helmet } = await import('koa-helmet')
        const { default: ratelimit } = await import('koa-ratelimit')
        app.use(helmet())
        app.use(ratelimit({ driver: 'memory', db: new Map(), duration: WINDOW_MS, max: NEVER }))
      }),
  },

  // What the rate limiter costs: Aegis without it, with it in memory, with it
  // on Redis, and the framework's usual limiter alone. `stack` tells the main
  // table how to compare them with the bare framework; `comparisons` below
  // holds the differences that answer the question.
  aegisVariant('express', 'express-aegis-nolimit', 'Express + Aegis, limiter off', NO_LIMIT),
  aegisVariant('express', 'express-aegis-limit', 'Express + Aegis, limiter in memory', () => AEGIS),
  {
    name: 'express-erl',
    framework: 'express',
    stack: 'peers',
    label: 'Express + express-rate-limit',
    expect: [LIMIT_HEADER],
    expectValues: PEER_LIMIT,
    expectAbsent: [SECURITY_HEADER],
    start: () =>
      express(async (app) => {
        const { rateLimit } = await import('express-rate-limit')
        app.use(rateLimit({ windowMs: WINDOW_MS, limit: NEVER }))
      }),
  },
  aegisVariant('express', 'express-aegis-redis', 'Express + Aegis, limiter on Redis', aegisOnRedis),
  aegisVariant('fastify', 'fastify-aegis-nolimit', 'Fastify + Aegis, limiter off', NO_LIMIT),
  aegisVariant('fastify', 'fastify-aegis-noanomaly', 'Fastify + Aegis, anomaly off', NO_ANOMALY),
  aegisVariant('fastify', 'fastify-aegis-limit', 'Fastify + Aegis, limiter in memory', () => AEGIS),
  {
    name: 'fastify-frl',
    framework: 'fastify',
    stack: 'peers',
    label: 'Fastify + @fastify/rate-limit',
    expect: [LIMIT_HEADER],
    expectValues: PEER_LIMIT,
    expectAbsent: [SECURITY_HEADER],
    start: () =>
      fastify(async (app) => {
        const { default: rateLimit } = await import('@fastify/rate-limit')
        await app.register(rateLimit, { max: NEVER, timeWindow: WINDOW_MS })
      }),
  },
  aegisVariant('fastify', 'fastify-aegis-redis', 'Fastify + Aegis, limiter on Redis', aegisOnRedis),
  // The defaults and the metrics history (issue 18): its per-request cost against fastify-aegis.
  aegisVariant('fastify', 'fastify-aegis-history', 'Fastify + Aegis, metrics history on', () => ({
    ...AEGIS,
    history: true,
  })),
  // The operations core on (issue 18): metrics history and the admin API on its own loopback
  // listener (with admin on, history is on by default); its target is ≤ 1 µs over fastify-aegis.
  aegisVariant('fastify', 'fastify-aegis-ops', 'Fastify + Aegis, history and admin API on', () => ({
    ...AEGIS,
    admin: { token: 'bench-admin-token-0123456789abcdef', listen: '127.0.0.1:0' },
  })),
]

/**
 * Named sets of variants for `--suite`. `headline` is what `pnpm bench` runs:
 * each framework bare, with Aegis and with the peer stack.
 */
export const suites = {
  // What the anomaly engine in observe mode (a default) adds to the rest of the defaults.
  anomaly: ['fastify', 'fastify-aegis-noanomaly', 'fastify-aegis', 'koa', 'koa-aegis-noanomaly', 'koa-aegis'],
  // What the metrics history adds to the defaults.
  history: ['fastify', 'fastify-aegis', 'fastify-aegis-history'],
  // What the operations core (history and the admin API) adds to the defaults.
  operations: ['fastify', 'fastify-aegis', 'fastify-aegis-ops'],
  headline: [
    'express',
    'express-aegis',
    'express-peers',
    'fastify',
    'fastify-aegis',
    'fastify-peers',
    'koa',
    'koa-aegis',
    'koa-peers',
  ],
  limiter: [
    'express',
    'express-aegis-nolimit',
    'express-aegis-limit',
    'express-erl',
    'express-aegis-redis',
    'fastify',
    'fastify-aegis-nolimit',
    'fastify-aegis-limit',
    'fastify-frl',
    'fastify-aegis-redis',
  ],
}

/**
 * Derived figures the runner prints when both variants of a row were measured,
 * paired by round (the runs of one round are minutes apart, those of two
 * rounds may not be): `cpu` is the CPU µs/request of `variant` minus that of
 * `base`, `rate` the ratio of their req/s. A `cpu` row of two Aegis variants is
 * also measured in one process (lib/interleave.mjs), where `atMost` (µs), the
 * issue's target, is judged.
 *
 * @type {{ id: string, kind: 'cpu' | 'rate', label: string, variant: string, base: string, atMost?: number }[]}
 */
export const comparisons = [
  {
    id: 'fastify-anomaly',
    kind: 'cpu',
    label: 'The anomaly engine (observe) on Fastify',
    variant: 'fastify-aegis',
    base: 'fastify-aegis-noanomaly',
    atMost: 1.5,
  },
  {
    id: 'koa-anomaly',
    kind: 'cpu',
    label: 'The anomaly engine (observe) on Koa',
    variant: 'koa-aegis',
    base: 'koa-aegis-noanomaly',
    atMost: 1.5,
  },
  {
    id: 'fastify-operations',
    kind: 'cpu',
    label: 'History and the admin API on Fastify',
    variant: 'fastify-aegis-ops',
    base: 'fastify-aegis',
    atMost: 1,
  },
  {
    id: 'express-limiter',
    kind: 'cpu',
    label: 'Aegis memory limiter on Express',
    variant: 'express-aegis-limit',
    base: 'express-aegis-nolimit',
  },
  {
    id: 'express-erl',
    kind: 'cpu',
    label: 'express-rate-limit on Express',
    variant: 'express-erl',
    base: 'express',
  },
  {
    id: 'express-redis-cpu',
    kind: 'cpu',
    label: 'Redis instead of memory on Express (server process only)',
    variant: 'express-aegis-redis',
    base: 'express-aegis-limit',
  },
  {
    id: 'express-redis',
    kind: 'rate',
    label: 'Express: Redis / memory req/s',
    variant: 'express-aegis-redis',
    base: 'express-aegis-limit',
  },
  {
    id: 'fastify-limiter',
    kind: 'cpu',
    label: 'Aegis memory limiter on Fastify',
    variant: 'fastify-aegis-limit',
    base: 'fastify-aegis-nolimit',
  },
  {
    id: 'fastify-frl',
    kind: 'cpu',
    label: '@fastify/rate-limit on Fastify',
    variant: 'fastify-frl',
    base: 'fastify',
  },
  {
    id: 'fastify-redis-cpu',
    kind: 'cpu',
    label: 'Redis instead of memory on Fastify (server process only)',
    variant: 'fastify-aegis-redis',
    base: 'fastify-aegis-limit',
  },
  {
    id: 'fastify-redis',
    kind: 'rate',
    label: 'Fastify: Redis / memory req/s',
    variant: 'fastify-aegis-redis',
    base: 'fastify-aegis-limit',
  },
]

/**
 * What the rate-limiter issue claims, on the comparisons above: `less` holds
 * when comparison `id` is below comparison `than`, `atLeast` when it is at
 * least `value`. `report` rows have no target: the figure is shown only.
 *
 * @type {({ claim: string, id: string } & ({ than: string } | { atLeast: number } | { report: true }))[]}
 */
export const claims = [
  {
    claim: 'Aegis memory limiter costs less CPU/request than express-rate-limit (Express)',
    id: 'express-limiter',
    than: 'express-erl',
  },
  {
    claim: 'Aegis memory limiter costs less CPU/request than @fastify/rate-limit (Fastify)',
    id: 'fastify-limiter',
    than: 'fastify-frl',
  },
  { claim: 'Express: Redis mode ≥ 0.60x the req/s of memory mode', id: 'express-redis', atLeast: 0.6 },
  { claim: 'Fastify: Redis mode req/s / memory mode', id: 'fastify-redis', report: true },
]

/**
 * The variants an `--only a,b` list names, in its order and once each, or the
 * `fallback` suite's when there is no list. An unknown name throws.
 */
export function selectVariants(only, fallback = suites.headline) {
  const names = only === undefined ? fallback : [...new Set(only.split(',').map((n) => n.trim()))]
  const unknown = names.filter((n) => !variants.some((v) => v.name === n))
  if (unknown.length > 0) throw new Error(`unknown variant(s) in --only: ${unknown.join(', ')}`)
  return names.map((n) => variants.find((v) => v.name === n))
}
