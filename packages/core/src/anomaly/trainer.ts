/**
 * The model's training, off the request path: client snapshots go into a ring of the
 * most recent ones (a client at most once per `SNAPSHOT_MS`, so a busy client does not
 * crowd out the rest, and never while it is flagged); every `everyMs` a new forest is
 * grown on a copy of the ring a few trees at a time, each chunk on its own turn of the
 * event loop (`setImmediate`) and under `CHUNK_MS`, then swapped in at once. The issue
 * allows a worker thread instead; growing 100 trees on 256 points takes milliseconds,
 * less than a worker's start-up and copying, and chunks keep every stall under a few.
 */
import { forestGrower, type Forest } from './forest.js'

/** How long one chunk of growing may hold the event loop. */
const CHUNK_MS = 4
/** A client's snapshots are at least this far apart. */
export const SNAPSHOT_MS = 10_000

/** A trained model: the forest, and what normal looked like for explanations. */
export interface Model {
  readonly forest: Forest
  /** The median of each feature over the sample it was grown on. */
  readonly medians: Float64Array
  /** When it was swapped in (the engine's clock). */
  readonly at: number
  /** Snapshots it was grown on. */
  readonly rows: number
  /** Wall-clock milliseconds it took to grow, chunks and the waits between them included. */
  readonly ms: number
}

export interface TrainerOptions {
  readonly dimensions: number
  readonly capacity: number
  readonly trees: number
  readonly subsample: number
  readonly seed: number
  /** A new model is ready. */
  readonly onModel: (model: Model) => void
  /** Growing failed (a bug of ours): logged by the engine; the old model stays. */
  readonly onError: (err: unknown) => void
}

/**
 * @example
 * const trainer = createTrainer({ dimensions: 15, capacity: 4096, trees: 100, subsample: 256, seed: 1, onModel, onError })
 * trainer.offer(features)
 * trainer.train(now)
 */
export function createTrainer(o: TrainerOptions) {
  const ring = new Float64Array(o.capacity * o.dimensions)
  let next = 0
  let filled = 0
  let running: NodeJS.Immediate | undefined
  let closed = false
  let generation = 0

  return {
    /** Snapshots held. */
    get size(): number {
      return filled
    },
    get training(): boolean {
      return running !== undefined
    },
    /** Keep a snapshot of a client's features (copied). */
    offer(features: Float64Array): void {
      ring.set(features, next * o.dimensions)
      next = (next + 1) % o.capacity
      if (filled < o.capacity) filled++
    },
    /** Grow a new model on the snapshots held now; `false` when one is already growing or closed. */
    train(now: number): boolean {
      if (running !== undefined || closed || filled === 0) return false
      const rows = filled
      const data = ring.slice(0, rows * o.dimensions)
      const grower = forestGrower(data, o.dimensions, {
        trees: o.trees,
        subsample: o.subsample,
        seed: (o.seed + generation++) >>> 0,
      })
      const started = performance.now()
      const chunk = (): void => {
        running = undefined
        if (closed) return
        try {
          const until = performance.now() + CHUNK_MS
          let done = false
          while (!done && performance.now() < until) done = grower.step(1)
          if (!done) {
            running = setImmediate(chunk)
            return
          }
          const model: Model = {
            forest: grower.forest(),
            medians: medians(data, rows, o.dimensions),
            at: now,
            rows,
            ms: performance.now() - started,
          }
          o.onModel(model)
        } catch (err) {
          o.onError(err)
        }
      }
      running = setImmediate(chunk)
      return true
    },
    /** Stop growing; nothing runs after this. */
    close(): void {
      closed = true
      if (running !== undefined) clearImmediate(running)
      running = undefined
    },
  }
}
export type Trainer = ReturnType<typeof createTrainer>

/** Each column's median (the lower middle for an even count). */
function medians(data: Float64Array, rows: number, dimensions: number): Float64Array {
  const out = new Float64Array(dimensions)
  const column = new Float64Array(rows)
  for (let f = 0; f < dimensions; f++) {
    for (let i = 0; i < rows; i++) column[i] = data[i * dimensions + f] as number
    column.sort()
    out[f] = column[(rows - 1) >> 1] as number
  }
  return out
}
