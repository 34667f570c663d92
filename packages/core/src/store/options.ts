import { z } from 'zod'

/**
 * An ioredis `Redis` or `Cluster` passed in by the user, recognised by shape:
 * `instanceof` fails when the app and Aegis resolve two installed copies.
 */
export interface RedisClientLike {
  duplicate(...args: never[]): unknown
  status: string
  isCluster?: boolean
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

const plainObject = z.custom<Record<string, unknown>>(
  (v) => typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype,
)

/** Where shared state lives. Without `redis` or `cluster`, everything stays in process memory. */
export const storeSchema = z
  .strictObject({
    /** A redis:// URL, ioredis options, or an existing ioredis `Redis` / `Cluster` (Aegis works on a duplicate). */
    redis: z
      .union([redisUrl, z.custom<RedisClientLike>(isRedisClient), plainObject], {
        error: 'expected a redis:// URL, ioredis options, or an ioredis Redis / Cluster client',
      })
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
