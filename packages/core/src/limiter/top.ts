/*
 * The limiter's heavy hitters, for the admin API (`limiter.top()`): which keys were refused
 * most in the last window, and which use the largest share of their limit. Bounded memory
 * and a tiny request-path cost: refusals feed a Space-Saving summary (Metwally, Agrawal,
 * El Abbadi, "Efficient Computation of Frequent and Top-k Elements in Data Streams", 2005:
 * m counters, a newcomer takes the smallest one's place and inherits its count as its
 * possible error, so a reported count is never below the true one and at most `error`
 * above it), and admitted requests are sampled, one in `SAMPLE_EVERY`, into a bounded set of
 * candidates for the largest share. The store is asked for the candidates' current state only
 * when `top()` is called, so the shares shown are exact for the keys shown. Per instance: with
 * Redis every instance counts its own refusals and samples its own requests.
 */

/** Counters per policy and per window of the refusal summary, and candidates for the largest share. */
export const TOP_CAPACITY = 100
/** One admitted request in this many is looked at for the share summary. */
export const SAMPLE_EVERY = 16

/** One key of a `KeyedMinHeap`: its number, a second one moved along (Space-Saving's error), its place. */
interface Node {
  key: string
  value: number
  extra: number
  pos: number
}

/**
 * Keys with a number each, in a min-heap by that number: the smallest is at hand and a
 * change costs O(log m). Nodes know their place, so moving one costs no map update: a
 * newcomer costs one map deletion and one insertion, a known key a lookup.
 */
class KeyedMinHeap {
  readonly nodes: Node[] = []
  private readonly byKey = new Map<string, Node>()

  get(key: string): Node | undefined {
    return this.byKey.get(key)
  }

  get size(): number {
    return this.nodes.length
  }

  /** The node with the smallest number (the heap is not empty). */
  get min(): Node {
    return this.nodes[0] as Node
  }

  push(key: string, value: number, extra: number): void {
    const node: Node = { key, value, extra, pos: this.nodes.length }
    this.nodes.push(node)
    this.byKey.set(key, node)
    this.up(node)
  }

  /** Give `node` a new number. */
  update(node: Node, value: number): void {
    const old = node.value
    node.value = value
    if (value > old) this.down(node)
    else this.up(node)
  }

  /** The smallest gives its place to `key` (its node is reused). */
  replaceMin(key: string, value: number, extra: number): void {
    const node = this.nodes[0] as Node
    this.byKey.delete(node.key)
    node.key = key
    node.value = value
    node.extra = extra
    this.byKey.set(key, node)
    this.down(node)
  }

  private place(node: Node, pos: number): void {
    this.nodes[pos] = node
    node.pos = pos
  }

  private up(node: Node): void {
    let i = node.pos
    while (i > 0) {
      const parent = this.nodes[(i - 1) >> 1] as Node
      if (parent.value <= node.value) break
      this.place(parent, i)
      i = (i - 1) >> 1
    }
    this.place(node, i)
  }

  private down(node: Node): void {
    const { nodes } = this
    const n = nodes.length
    let i = node.pos
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const child = r < n && (nodes[r] as Node).value < (nodes[l] as Node).value ? r : l
      const c = nodes[child] as Node
      if (c.value >= node.value) break
      this.place(c, i)
      i = child
    }
    this.place(node, i)
  }
}

/**
 * A Space-Saving summary of `capacity` counters over a stream of keys: a known key's
 * counter grows, a newcomer takes the smallest counter and inherits its count as its error.
 */
export class SpaceSaving {
  private readonly heap = new KeyedMinHeap()

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.heap.size
  }

  /** Count one occurrence of `key`. */
  add(key: string): void {
    const h = this.heap
    const node = h.get(key)
    if (node !== undefined) h.update(node, node.value + 1)
    else if (h.size < this.capacity) h.push(key, 1, 0)
    else h.replaceMin(key, h.min.value + 1, h.min.value)
  }

  /** `key`'s count and possible overcount, or `undefined` when it holds no counter. */
  get(key: string): { count: number; error: number } | undefined {
    const node = this.heap.get(key)
    return node === undefined ? undefined : { count: node.value, error: node.extra }
  }

  /** Every counter. */
  entries(): { key: string; count: number; error: number }[] {
    return this.heap.nodes.map((n) => ({ key: n.key, count: n.value, error: n.extra }))
  }
}

/** The largest shares seen, by key: at most `capacity`; a newcomer larger than the smallest takes its place. */
class LargestShares {
  private readonly heap = new KeyedMinHeap()

  constructor(private readonly capacity: number) {}

  see(key: string, share: number): void {
    const h = this.heap
    const node = h.get(key)
    if (node !== undefined) h.update(node, share)
    else if (h.size < this.capacity) h.push(key, share, 0)
    else if (share > h.min.value) h.replaceMin(key, share, 0)
  }

  keys(): string[] {
    return this.heap.nodes.map((n) => n.key)
  }
}

/** One policy's refusals in two consecutive windows, and its candidates for the largest share. */
class PolicyTop {
  current = new SpaceSaving(TOP_CAPACITY)
  previous = new SpaceSaving(TOP_CAPACITY)
  /** When `current` began (`performance.now()`); `previous` is the window before, if it was directly before. */
  startedAt: number
  readonly shares = new LargestShares(TOP_CAPACITY)

  constructor(
    readonly windowMs: number,
    now: number,
  ) {
    this.startedAt = now
  }

  rotate(now: number): void {
    const elapsed = now - this.startedAt
    if (elapsed < this.windowMs) return
    // A window with no refusal at all in between leaves nothing to remember.
    this.previous = elapsed < 2 * this.windowMs ? this.current : new SpaceSaving(TOP_CAPACITY)
    this.current = new SpaceSaving(TOP_CAPACITY)
    this.startedAt = now - (elapsed % this.windowMs)
  }

  /**
   * Refusals of each key over the last `windowMs`, estimated as a sliding window does: the
   * current window's count, plus the previous one's weighted by how much of it is still inside.
   */
  limited(now: number): Map<string, { count: number; error: number }> {
    this.rotate(now)
    const weight = 1 - (now - this.startedAt) / this.windowMs
    const out = new Map<string, { count: number; error: number }>()
    for (const e of this.current.entries()) out.set(e.key, { count: e.count, error: e.error })
    for (const e of this.previous.entries()) {
      const c = out.get(e.key) ?? { count: 0, error: 0 }
      out.set(e.key, { count: c.count + e.count * weight, error: c.error + e.error * weight })
    }
    for (const [k, c] of out) out.set(k, { count: Math.round(c.count), error: Math.round(c.error) })
    return out
  }
}

/**
 * The heavy hitters of every policy of a limiter (each at its `index`).
 *
 * @example
 * const top = createTopKeys(2, 60_000)
 * top.refused(0, '203.0.113.7', performance.now())
 * top.policy(0).limited(performance.now()).get('203.0.113.7') // { count: 1, error: 0 }
 */
export function createTopKeys(
  policies: number,
  windowMs: number,
): {
  refused(policy: number, key: string, now: number): void
  sampled(policy: number, key: string, share: number): void
  policy(index: number): PolicyTop
} {
  const now = performance.now()
  const tops = Array.from({ length: policies }, () => new PolicyTop(windowMs, now))
  return {
    refused(policy, key, at) {
      const t = tops[policy] as PolicyTop
      t.rotate(at)
      t.current.add(key)
      t.shares.see(key, 1)
    },
    sampled(policy, key, share) {
      ;(tops[policy] as PolicyTop).shares.see(key, share)
    },
    policy: (index) => tops[index] as PolicyTop,
  }
}
