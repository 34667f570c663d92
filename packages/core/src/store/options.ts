import { z } from 'zod'
import { checkCertificatePair, pemCertificates, pemPrivateKey } from '../options/tls.js'

/**
 * A Redis or Cluster client passed in by the user, recognised by shape:
 * `instanceof` fails when the app and Aegis resolve two installed copies.
 * Declared here rather than imported from the client library (as is
 * `RedisClient`): the public types then never make a user's `tsc` read the
 * library's declarations.
 */
export interface RedisClientLike {
  duplicate(...args: never[]): unknown
  sendCommand(...args: never[]): unknown
  readonly status: string
  readonly isCluster?: boolean
}

/**
 * The Redis client Aegis works on (a duplicate of yours, or one it opened): the
 * part of the client library's `Redis` / `Cluster` that Aegis calls, declared
 * structurally so that Aegis' public `.d.ts` imports nothing from that library.
 * With its types there, every user's `tsc --strict` type-checked the library
 * (and failed on its untyped dependencies), Redis or not. Cast it to the
 * library's `Redis` / `Cluster` type for anything else.
 *
 * @example
 * const ready = aegis.store?.client.status === 'ready'
 */
export interface RedisClient {
  /** The connection status (`'ready'` when commands are sent at once). */
  readonly status: string
  /** `true` on a `Cluster`. */
  readonly isCluster?: boolean
  on(event: string, listener: (...args: unknown[]) => void): unknown
  set(key: string, value: string, mode: 'PX', milliseconds: number): Promise<unknown>
  del(...keys: string[]): Promise<number>
  publish(channel: string, message: string): Promise<number>
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number; readOnly?: boolean }): void
  duplicate(...args: never[]): unknown
  quit(): Promise<unknown>
  disconnect(): void
}

export const isRedisClient = (v: unknown): v is RedisClientLike =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as RedisClientLike).duplicate === 'function' &&
  typeof (v as RedisClientLike).status === 'string' &&
  typeof (v as { sendCommand?: unknown }).sendCommand === 'function'

const redisUrl = z.string().refine(
  (s) => {
    try {
      return ['redis:', 'rediss:'].includes(new URL(s).protocol)
    } catch {
      return false
    }
  },
  { message: 'expected a redis:// or rediss:// URL' },
)

const clusterNode = z.union([
  redisUrl,
  z.strictObject({ host: z.string().min(1), port: z.int().min(1).max(65_535) }),
])

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype

/** The TLS part of ioredis options (Node's `tls.connect` options): the PEM fields must parse. */
const redisTls = z
  .looseObject({
    ca: pemCertificates.optional(),
    cert: pemCertificates.optional(),
    key: pemPrivateKey.optional(),
    servername: z.string().min(1).optional(),
    rejectUnauthorized: z.boolean().optional(),
  })
  .superRefine(checkCertificatePair)

const redisConnectionFields = {
  host: z.string().min(1).optional(),
  port: z.int().min(1).max(65_535).optional(),
  path: z.string().min(1).optional(),
  family: z.union([z.literal(0), z.literal(4), z.literal(6)]).optional(),
  db: z.int().min(0).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  name: z.string().optional(),
  tls: redisTls.optional(),
  connectTimeout: z.int().min(0).optional(),
  keepAlive: z.int().min(0).optional(),
  noDelay: z.boolean().optional(),
  connectionName: z.string().optional(),
  enableReadyCheck: z.boolean().optional(),
  lazyConnect: z.boolean().optional(),
  keyPrefix: z.string().optional(),
}

/**
 * ioredis options, the fields Aegis can check: a mistyped one (`port: 'x'`) fails
 * here with its path instead of as an endless reconnect loop at run time. Other
 * ioredis fields pass through as given (ioredis has many; Aegis overrides the
 * ones that make Redis safe in a request path anyway). With `cluster`, the
 * object may also hold ioredis `ClusterOptions`, `redisOptions` included.
 */
const redisOptionsSchema = z.looseObject({
  ...redisConnectionFields,
  redisOptions: z.looseObject(redisConnectionFields).optional(),
})

/** A copy of plain objects and arrays, all the way down; anything else (functions, Buffers, class instances) by reference. */
const copyPlain = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(copyPlain)
  if (!isPlainObject(v)) return v
  const out: Record<string, unknown> = {}
  for (const [k, x] of Object.entries(v)) out[k] = copyPlain(x)
  return out
}

/** Plain ioredis options, checked in place (copied once the union has chosen them, below). */
const redisOptions = z.custom<Record<string, unknown>>(isPlainObject).superRefine((v, ctx) => {
  const result = redisOptionsSchema.safeParse(v)
  if (result.success) return
  for (const issue of result.error.issues)
    ctx.addIssue({ code: 'custom', message: issue.message, path: [...issue.path] })
})

/** Where shared state lives. Without `redis` or `cluster`, everything stays in process memory. */
export const storeSchema = z
  .strictObject({
    /** A redis:// URL, ioredis options, or an existing ioredis `Redis` / `Cluster` (Aegis works on a duplicate). */
    redis: z
      .union([redisUrl, z.custom<RedisClientLike>(isRedisClient), redisOptions], {
        error: 'expected a redis:// URL, ioredis options, or an ioredis Redis / Cluster client',
      })
      // Plain options are copied: the parsed config is frozen, and freezing the caller's
      // own object would mutate it. No field is rebuilt or dropped (ioredis reads them all).
      .transform((v) => (isPlainObject(v) ? (copyPlain(v) as Record<string, unknown>) : v))
      .optional(),
    /** Startup nodes of a Redis Cluster (URLs or `{ host, port }`); ioredis options go in `redis`. */
    cluster: z.array(clusterNode).min(1).optional(),
    /** Prefix of every key Aegis writes. */
    prefix: z.string().max(64).default('aegis:'),
    /** Longest a request waits for Redis before the in-memory insurance decides, in ms. */
    commandTimeout: z.int().min(5).max(10_000).default(100),
    /** While Redis is down, how often Aegis checks whether it is back, in ms. */
    probeInterval: z.int().min(50).max(60_000).default(1_000),
    /**
     * Longest the first decisions wait for the first connection to Redis, in ms (0: decide in
     * memory at once). A refused connection ends the wait at once.
     */
    startupWait: z.int().min(0).max(30_000).default(2_000),
  })
  .refine((s) => !(s.cluster !== undefined && isRedisClient(s.redis)), {
    message: 'pass either a client in redis, or cluster startup nodes, not both',
    path: ['cluster'],
  })
  .prefault({})

export type StoreOptions = z.input<typeof storeSchema>
export type StoreConfig = z.output<typeof storeSchema>
