/**
 * Types of the parts of report.mjs the TypeScript tests use
 * (test/bench/anomaly-traffic.test.ts).
 */

/** The problem type of an anomaly block. */
export declare const ABNORMAL_USAGE: string

/** What the engine's debug header said; a field missing or malformed is `undefined`. */
export interface AnomalyHeader {
  readonly score: number | undefined
  readonly threshold: number | undefined
  readonly reasons: readonly string[]
}

/**
 * Read `X-Aegis-Anomaly` defensively: `undefined` when absent or empty.
 *
 * @example
 * parseAnomalyHeader('score=0.82; threshold=0.6') // { score: 0.82, threshold: 0.6, reasons: [] }
 */
export declare function parseAnomalyHeader(
  value: string | readonly string[] | undefined,
): AnomalyHeader | undefined

/**
 * Nearest-rank percentile.
 *
 * @example
 * percentile([1, 2, 3, 4], 50) // 2
 */
export declare function percentile(values: readonly number[], p: number): number | undefined
