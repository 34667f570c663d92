/**
 * The admin API's endpoints, under `/v1`: each reads or changes one engine through its public
 * API (`aegis.anomaly`, `aegis.limiter`, …), so the API can do nothing a program holding the
 * instance could not. The answers are the data contract of version 1 (docs/operations.md):
 * fields are only ever added to them.
 */
import { AegisArgumentError, AegisError, ErrorCodes } from '../kernel/errors.js'
import type { EventBus } from '../kernel/events.js'
import type { AegisConfig } from '../options/index.js'
import type { EngineApis } from '../pipeline/engines.js'
import type { Aegis, ReloadResult } from '../pipeline/api.js'
import { configHash } from '../reload/diff.js'
import { watcherOf } from '../reload/watch.js'
import type { RedisConnection } from '../store/index.js'
import { AEGIS_VERSION } from '../version.js'
import { AdminProblem, type AdminAnswer, type AdminRequest, type AdminRoute } from './http.js'
import { redactConfig } from './redact.js'

/** What the endpoints read from. */
export interface EndpointDeps {
  readonly config: () => AegisConfig
  /** The configuration's generation: 1 at start, one more at each reload. */
  readonly generation: () => number
  readonly apis: EngineApis
  readonly events: EventBus
  readonly store: RedisConnection | undefined
  /** The engines built, in table order. */
  readonly engines: () => readonly string[]
  /** When the instance started (ms since the epoch). */
  readonly startedAt: number
  /** The instance's `validate` and `reload`. */
  readonly reconfigure: () => Pick<Aegis, 'validateConfig' | 'reload'>
}

/** The version of the answers' shapes. */
export const API_VERSION = 1

/** A query parameter as a whole number in [min, max], or the default; a 400 otherwise. */
export function intParam(
  query: URLSearchParams,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = query.get(name)
  if (raw === null || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new AegisArgumentError(`${name} must be a whole number from ${min} to ${max}`)
  return n
}

/** A JSON body's string field, or a 400. */
function stringField(body: unknown, name: string, optional = false): string | undefined {
  const v = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined
  if (v === undefined && optional) return undefined
  if (typeof v !== 'string' || v === '' || v.length > 1024)
    throw new AegisArgumentError(`the body needs a non-empty string field "${name}"`)
  return v
}

/** `o` without its `undefined` fields (the options of the APIs take no explicit `undefined`). */
function defined<T extends object>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as never
}

/** An engine's API, or a 404 naming the option that turns it on. */
function need<T>(api: T | undefined, engine: string, option: string): T {
  if (api === undefined)
    throw new AdminProblem(404, ErrorCodes.NOT_FOUND, 'Not Found', `the ${engine} is off (option ${option})`)
  return api
}

/**
 * The redacted configuration and its entity tag: the generation and the content hash of the
 * whole configuration, secrets included (a changed token changes it, without showing it).
 */
export function configView(config: AegisConfig, generation: number): { body: unknown; etag: string } {
  return { body: redactConfig(config), etag: `"${generation}-${configHash(config)}"` }
}

/** A configuration refused: 400 with every problem by path. */
function refused(errors: readonly { path: string; message: string }[]): AdminProblem {
  return new AdminProblem(
    400,
    ErrorCodes.CONFIG,
    'Invalid configuration',
    errors.map((e) => `${e.path === '' ? '(root)' : e.path}: ${e.message}`).join('; '),
    undefined,
    { errors: errors.map(({ path, message }) => ({ path, message })) },
  )
}

/** What a reload answers, and its audit entry. */
function applied(
  result: ReloadResult,
  file?: string,
): { body: unknown; audit: NonNullable<AdminAnswer['audit']> } {
  if (!result.ok) throw refused(result.errors)
  return {
    body: {
      version: API_VERSION,
      changed: result.changed,
      generation: result.generation,
      ...(file === undefined ? {} : { file }),
      before: result.before,
      after: result.after,
      diff: result.diff,
    },
    audit: {
      before: result.before,
      after: result.after,
      diff: result.diff,
      ...(file === undefined ? {} : { target: file }),
    },
  }
}

/**
 * @example
 * const routes = adminRoutes(deps)
 */
export function adminRoutes(deps: EndpointDeps): AdminRoute[] {
  const { apis } = deps
  const anomaly = () => need(apis.anomaly, 'anomaly engine', 'anomaly')
  const limiter = () => need(apis.limiter, 'limiter', 'limiter')
  const ghost = () => need(apis.ghost, 'ghost cache', 'ghost')
  const audit = () => need(apis.audit, 'audit trail', 'audit')
  const history = () => need(apis.history, 'metrics history', 'history')
  const gateway = () => (apis.gateway as NonNullable<EngineApis['gateway']>).gateway
  /** An upstream control: the change, audited with its route and upstream. */
  const control = (
    path: string,
    action: string,
    summary: string,
    act: (route: string, upstream: string, body: unknown) => unknown,
  ): AdminRoute => ({
    method: 'POST',
    path: `/routes/:route/upstreams/:upstream/${path}`,
    role: 'admin',
    action,
    summary,
    handle: async (r) => {
      const route = r.params.route as string
      const upstream = r.params.upstream as string
      const change = act(route, upstream, await r.json())
      return { body: { version: API_VERSION, change }, audit: { target: `${route} ${upstream}` } }
    },
  })

  return [
    {
      method: 'GET',
      path: '/status',
      role: 'read',
      summary: 'version, uptime, configuration generation, engines, store health',
      handle: () => {
        const store = deps.store
        return {
          body: {
            version: API_VERSION,
            aegis: AEGIS_VERSION,
            node: process.version,
            pid: process.pid,
            startedAt: new Date(deps.startedAt).toISOString(),
            uptimeMs: Date.now() - deps.startedAt,
            generation: deps.generation(),
            engines: deps.engines(),
            store:
              store === undefined
                ? { configured: false }
                : { configured: true, cluster: store.isCluster, up: store.up, starting: store.starting },
          },
        }
      },
    },
    {
      method: 'GET',
      path: '/config',
      role: 'read',
      summary: 'the configuration in force, secrets redacted, with its ETag',
      handle: ({ req }) => {
        const { body, etag } = configView(deps.config(), deps.generation())
        if (req.headers['if-none-match'] === etag) return { status: 304, headers: { etag } }
        return {
          body: { version: API_VERSION, generation: deps.generation(), config: body },
          headers: { etag },
        }
      },
    },
    {
      method: 'POST',
      path: '/config/validate',
      role: 'read',
      summary:
        'check a configuration (the whole options object) without applying it: its errors by path, or its diff',
      handle: async (r) => {
        const result = deps.reconfigure().validateConfig((await r.json()) as never)
        return {
          body: result.ok
            ? {
                version: API_VERSION,
                ok: true,
                changed: result.changed,
                before: result.before,
                after: result.after,
                diff: result.diff,
              }
            : {
                version: API_VERSION,
                ok: false,
                errors: result.errors.map(({ path, message }) => ({ path, message })),
              },
        }
      },
    },
    {
      method: 'PUT',
      path: '/config',
      role: 'admin',
      action: 'config.apply',
      summary:
        'apply a configuration (the whole options object); If-Match: the ETag of GET /v1/config, else 412',
      handle: async (r) => {
        const options = await r.json()
        const match = r.req.headers['if-match']
        if (
          match !== undefined &&
          match !== '*' &&
          match !== configView(deps.config(), deps.generation()).etag
        )
          throw new AdminProblem(
            412,
            ErrorCodes.ADMIN_PRECONDITION,
            'Precondition Failed',
            'the configuration changed since that ETag was read: read it again (GET /v1/config)',
          )
        if (typeof options !== 'object' || options === null || Array.isArray(options))
          throw new AegisArgumentError('the body is the whole options object')
        const result = await deps.reconfigure().reload(options, { source: 'api', actor: r.actor.name })
        const { body, audit } = applied(result)
        return { body, audit, headers: { etag: configView(deps.config(), deps.generation()).etag } }
      },
    },
    {
      method: 'POST',
      path: '/config/reload',
      role: 'admin',
      action: 'config.reload',
      summary: 'read the configuration file again and apply it (aegis serve, or watchConfig)',
      handle: async (r) => {
        const watcher = watcherOf(deps.events)
        if (watcher === undefined)
          throw new AdminProblem(
            409,
            ErrorCodes.ADMIN_NO_FILE,
            'No configuration file',
            'this instance was not started from a file (aegis serve FILE, or watchConfig())',
          )
        const result = await watcher.reload({ source: 'api', actor: r.actor.name })
        if (result === undefined)
          throw new AdminProblem(
            400,
            ErrorCodes.CONFIG,
            'Invalid configuration',
            `${watcher.file} could not be read or parsed (see the config.refused event and the logs)`,
          )
        return applied(result, watcher.file)
      },
    },
    {
      method: 'GET',
      path: '/anomaly/clients',
      role: 'read',
      summary: 'the most anomalous clients, with their reasons (?n=10)',
      handle: ({ query }) => ({
        body: { version: API_VERSION, clients: anomaly().top(intParam(query, 'n', 10, 1, 1000)) },
      }),
    },
    {
      method: 'GET',
      path: '/anomaly/clients/:key',
      role: 'read',
      summary: "one client's score, reasons and features",
      handle: ({ params }) => {
        const client = anomaly().explain(params.key as string)
        if (client === undefined)
          throw new AdminProblem(404, ErrorCodes.NOT_FOUND, 'Not Found', 'no such client is remembered')
        return { body: { version: API_VERSION, client } }
      },
    },
    {
      method: 'GET',
      path: '/anomaly/stats',
      role: 'read',
      summary: "the anomaly engine's mode, clients, blocks and model",
      handle: () => ({ body: { version: API_VERSION, stats: anomaly().stats() } }),
    },
    {
      method: 'POST',
      path: '/anomaly/block',
      role: 'admin',
      action: 'anomaly.block',
      summary: 'block a client: { key, ms? }',
      handle: async (r) => {
        const body = await r.json()
        const key = stringField(body, 'key') as string
        const ms = (body as { ms?: unknown }).ms
        if (ms !== undefined && (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 1))
          throw new AegisArgumentError('ms must be a positive whole number of milliseconds')
        anomaly().block(key, ms)
        return { body: { version: API_VERSION, blocked: key }, audit: { target: key } }
      },
    },
    {
      method: 'POST',
      path: '/anomaly/unblock',
      role: 'admin',
      action: 'anomaly.unblock',
      summary: "lift a client's block: { key }",
      handle: async (r) => {
        const key = stringField(await r.json(), 'key') as string
        return {
          body: { version: API_VERSION, key, unblocked: anomaly().unblock(key) },
          audit: { target: key },
        }
      },
    },
    {
      method: 'GET',
      path: '/limiter/keys/:key',
      role: 'read',
      summary: "one key's state under a policy (?policy=)",
      handle: async ({ params, query }) => {
        const policy = query.get('policy') ?? undefined
        const state = await limiter().get(params.key as string, policy)
        if (state === undefined)
          throw new AdminProblem(404, ErrorCodes.NOT_FOUND, 'Not Found', 'the key holds no state')
        return { body: { version: API_VERSION, key: params.key, state } }
      },
    },
    {
      method: 'DELETE',
      path: '/limiter/keys/:key',
      role: 'admin',
      action: 'limiter.clear',
      summary: 'forget a key: its bucket and any ban (?policy=)',
      handle: async ({ params, query }) => {
        const policy = query.get('policy') ?? undefined
        await limiter().reset(params.key as string, policy)
        return {
          body: { version: API_VERSION, key: params.key, cleared: true },
          audit: {
            target: policy === undefined ? (params.key as string) : `${params.key as string} (${policy})`,
          },
        }
      },
    },
    {
      method: 'GET',
      path: '/ghost/entries',
      role: 'read',
      summary:
        'what the ghost cache holds, a page at a time, never bodies (?limit=100&cursor=&route=&prefix=)',
      handle: async ({ query }) => {
        const page = await ghost().entries(
          defined({
            limit: intParam(query, 'limit', 100, 1, 1000),
            cursor: query.get('cursor') ?? undefined,
            route: query.get('route') ?? undefined,
            prefix: query.get('prefix') ?? undefined,
          }),
        )
        return { body: { version: API_VERSION, ...page } }
      },
    },
    {
      method: 'GET',
      path: '/ghost/templates',
      role: 'read',
      summary: 'per route template: learned, served, refused',
      handle: () => ({ body: { version: API_VERSION, templates: ghost().templates() } }),
    },
    {
      method: 'POST',
      path: '/ghost/purge',
      role: 'admin',
      action: 'ghost.purge',
      summary: 'forget entries: { key } | { prefix } | { template } | { route } | { all: true }',
      handle: async (r) => {
        const body = await r.json()
        const fields = ['key', 'prefix', 'template', 'route'] as const
        const given = fields.flatMap((name) => {
          const v = stringField(body, name, true)
          return v === undefined ? [] : [[name, v] as const]
        })
        const all = typeof body === 'object' && body !== null && (body as { all?: unknown }).all === true
        if (given.length + (all ? 1 : 0) !== 1)
          throw new AegisArgumentError(
            'give exactly one of "key", "prefix", "template", "route", or "all": true',
          )
        const [what, value] = given[0] ?? ['all', '']
        const purged = await ghost().purge(all ? { all: true } : ({ [what]: value } as never))
        return {
          body: { version: API_VERSION, purged },
          audit: { target: all ? 'all' : `${what} ${value}` },
        }
      },
    },
    {
      method: 'GET',
      path: '/audit',
      role: 'read',
      summary:
        'search the audit trail a page at a time (?after|before=seq&from=&to=&types=a,b&actor=&client=&route=&limit=100&order=asc|desc)',
      handle: async ({ query }) => {
        const list = (name: string) =>
          query
            .get(name)
            ?.split(',')
            .filter((t) => t !== '')
        const text = (name: string) => query.get(name) ?? undefined
        const seq = (name: string) =>
          query.get(name) === null ? undefined : intParam(query, name, 0, 0, Number.MAX_SAFE_INTEGER)
        const order = query.get('order')
        if (order !== null && order !== 'asc' && order !== 'desc')
          throw new AegisArgumentError("order is 'asc' or 'desc'")
        const page = await audit().query({
          ...defined({
            after: seq('after'),
            before: seq('before'),
            from: text('from'),
            to: text('to'),
            types: list('types'),
            actor: text('actor'),
            client: text('client'),
            route: text('route'),
            order: order ?? undefined,
          }),
          limit: intParam(query, 'limit', 100, 1, 1000),
        })
        return { body: page }
      },
    },
    {
      method: 'GET',
      path: '/audit/stats',
      role: 'read',
      summary: "the trail's entries by type, first and last, size, checkpoints, failures",
      handle: async () => ({ body: await audit().stats() }),
    },
    {
      method: 'GET',
      path: '/audit/verify',
      role: 'read',
      summary: 'walk the hash chain and the signed checkpoints; names the first bad entry',
      handle: async () => ({ body: { version: API_VERSION, verification: await audit().verify() } }),
    },
    {
      method: 'GET',
      path: '/audit/checkpoints',
      role: 'read',
      summary: 'the signed checkpoints',
      handle: async () => ({ body: { version: API_VERSION, checkpoints: await audit().checkpoints() } }),
    },
    {
      method: 'GET',
      path: '/history',
      role: 'read',
      summary:
        'metrics history: ?range=10m|30m|6h|24h|7d (or from=&to= in ms), series=a,status.*, merge=true, points=, histograms=false',
      handle: async ({ query }) => {
        const num = (name: string) => {
          const v = query.get(name)
          if (v === null) return undefined
          const n = Number(v)
          if (!Number.isFinite(n)) throw new AegisArgumentError(`${name} must be a number`)
          return n
        }
        const flag = (name: string) => {
          const v = query.get(name)
          if (v === null) return undefined
          if (v !== 'true' && v !== 'false') throw new AegisArgumentError(`${name} is true or false`)
          return v === 'true'
        }
        const result = await history().query(
          defined({
            range: (query.get('range') ?? undefined) as never,
            from: num('from'),
            to: num('to'),
            step: num('step'),
            points: num('points'),
            series: query
              .get('series')
              ?.split(',')
              .filter((s) => s !== ''),
            merge: flag('merge'),
            histograms: flag('histograms'),
          }),
        )
        return { body: result }
      },
    },
    {
      method: 'GET',
      path: '/history/instances',
      role: 'read',
      summary: 'the instances that share the store, most recent first',
      handle: async () => ({ body: { version: API_VERSION, instances: await history().instances() } }),
    },
    {
      method: 'GET',
      path: '/runtime',
      role: 'read',
      summary: 'the process now: event-loop delay, heap, RSS, CPU, uptime; and Redis INFO',
      handle: async () => ({
        body: {
          version: API_VERSION,
          runtime: history().runtime(),
          redis: (await history().redis()) ?? null,
        },
      }),
    },
    {
      method: 'GET',
      path: '/routes',
      role: 'read',
      summary: 'every proxy route and upstream: weights, health, breaker, in-flight, queue',
      handle: () => ({ body: { version: API_VERSION, routes: gateway().status() } }),
    },
    {
      method: 'GET',
      path: '/routes/:route/upstreams/:upstream',
      role: 'read',
      summary: "one upstream's state (route and upstream URL-encoded)",
      handle: ({ params }) => ({
        body: {
          version: API_VERSION,
          upstream: gateway().upstream(params.route as string, params.upstream as string),
        },
      }),
    },
    control(
      'drain',
      'upstream.drain',
      'stop sending new requests to an upstream; in-flight ones finish',
      (r, u) => gateway().drain(r, u),
    ),
    control('enable', 'upstream.enable', 'take a drained upstream back (slow start)', (r, u) =>
      gateway().enable(r, u),
    ),
    control(
      'breaker',
      'breaker.force',
      "hold an upstream's breaker: { state: 'open' | 'closed' | 'auto' }",
      (r, u, body) => gateway().forceBreaker(r, u, stringField(body, 'state') as never),
    ),
    {
      method: 'GET',
      path: '/limiter/top',
      role: 'read',
      summary:
        'the keys refused most in the last minute, or using most of their limit (?by=limited|share&n=10&policy=)',
      handle: async ({ query }) => {
        const by = query.get('by') ?? 'limited'
        if (by !== 'limited' && by !== 'share') throw new AegisArgumentError("by is 'limited' or 'share'")
        const top = await limiter().top(
          defined({ by, n: intParam(query, 'n', 10, 1, 100), policy: query.get('policy') ?? undefined }),
        )
        return { body: { version: API_VERSION, ...top } }
      },
    },
  ]
}

/** What a thrown error answers: its own problem, a 400/404 for a bad argument, else a 500. */
export function problemOf(err: unknown): AdminProblem {
  if (err instanceof AdminProblem) return err
  if (err instanceof AegisArgumentError)
    return new AdminProblem(
      err.status,
      err.code,
      err.status === 404 ? 'Not Found' : 'Bad Request',
      err.message,
    )
  if (AegisError.is(err) && err.code === ErrorCodes.CONFIG)
    return new AdminProblem(400, ErrorCodes.CONFIG, 'Invalid configuration', err.message)
  return new AdminProblem(
    500,
    ErrorCodes.INTERNAL,
    'Internal Server Error',
    'the admin API failed; see the logs',
  )
}

export type { AdminRequest }
