/**
 * The Isolation Forest against the published figure on a real benchmark: ODDS shuttle
 * (bench/data/odds-shuttle, 49,097 points, 9 attributes, 3,511 outliers). Liu, Ting & Zhou
 * report an AUC of 1.00 there (ICDM 2008, Table 2, 100 trees, ψ = 256); LinkedIn's Spark
 * implementation reports 0.9971 for its StandardIF. The issue asks for 0.9971 within 0.01,
 * for every one of five seeds and on average: the forest is grown on the whole set, as in
 * the paper, and every point is scored. Measured when this test was added: 0.99804, 0.99789,
 * 0.99807, 0.99700, 0.99507 (seeds 1–5), mean 0.99722; over seeds 1–20 the mean is 0.99696,
 * from 0.99507 to 0.99807. The test prints the figures of each run.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { growForest } from '../src/anomaly/forest.js'

const PUBLISHED = 0.9971
const TOLERANCE = 0.01
const SEEDS = [1, 2, 3, 4, 5]
const CSV = new URL('../../../bench/data/odds-shuttle/shuttle.csv', import.meta.url)
/** The committed file's digest, so a re-export that reorders or rounds the data fails here, not silently. */
const CSV_SHA256 = '3b05aae05e262d3ea3336cfec3041241b00ec32526b22e1afe20a42ead558937'

/** The CSV as row-major features and 0/1 labels (header `a1,…,a9,outlier`). */
function loadShuttle(): { data: Float64Array; labels: Uint8Array; dimensions: number; digest: string } {
  const text = readFileSync(CSV, 'utf8')
  const lines = text.split('\n').filter((line) => line !== '')
  const header = (lines[0] as string).split(',')
  const dimensions = header.length - 1
  const rows = lines.length - 1
  const data = new Float64Array(rows * dimensions)
  const labels = new Uint8Array(rows)
  for (let r = 0; r < rows; r++) {
    const cells = (lines[r + 1] as string).split(',')
    for (let d = 0; d < dimensions; d++) data[r * dimensions + d] = Number(cells[d])
    labels[r] = Number(cells[dimensions])
  }
  return { data, labels, dimensions, digest: createHash('sha256').update(text).digest('hex') }
}

/**
 * The area under the ROC curve as the Mann–Whitney statistic: the chance that an outlier
 * picked at random scores above an inlier picked at random, a tie counting one half. Tied
 * scores share the mean of their ranks, which is what makes the half; the forest gives many
 * ties on shuttle, whose attributes are small integers and whose inliers crowd together.
 */
function auroc(scores: Float64Array, labels: Uint8Array): number {
  const n = scores.length
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (scores[a] as number) - (scores[b] as number),
  )
  let positives = 0
  let rankSum = 0
  for (let i = 0; i < n;) {
    let j = i
    while (j + 1 < n && scores[order[j + 1] as number] === scores[order[i] as number]) j++
    // Ranks i+1 … j+1 are tied: each gets their mean.
    const rank = (i + j + 2) / 2
    for (let k = i; k <= j; k++) {
      if (labels[order[k] as number] === 1) {
        positives++
        rankSum += rank
      }
    }
    i = j + 1
  }
  const negatives = n - positives
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives)
}

describe('isolation forest parity on ODDS shuttle', () => {
  it('computes AUROC with ties as halves', () => {
    const labels = new Uint8Array([0, 0, 1, 1])
    expect(auroc(new Float64Array([0.1, 0.2, 0.3, 0.4]), labels)).toBe(1)
    expect(auroc(new Float64Array([0.4, 0.3, 0.2, 0.1]), labels)).toBe(0)
    expect(auroc(new Float64Array([0.5, 0.5, 0.5, 0.5]), labels)).toBe(0.5)
    // Pairs (outlier, inlier): (0.3, 0.1) won, (0.3, 0.3) tied, (0.2, 0.1) won, (0.2, 0.3) lost.
    expect(auroc(new Float64Array([0.1, 0.3, 0.3, 0.2]), labels)).toBe((1 + 0.5 + 1 + 0) / 4)
  })

  it('holds the ODDS set: 49,097 points, 9 attributes, 3,511 outliers', () => {
    const { labels, dimensions, digest } = loadShuttle()
    expect(digest).toBe(CSV_SHA256)
    expect(dimensions).toBe(9)
    expect(labels.length).toBe(49_097)
    expect(labels.reduce((sum, y) => sum + y, 0)).toBe(3_511)
  })

  it(`scores within ${TOLERANCE} of ${PUBLISHED} for seeds ${SEEDS.join(', ')}`, () => {
    const { data, labels, dimensions } = loadShuttle()
    const rows = labels.length
    const point = new Float64Array(dimensions)
    const results: number[] = []
    for (const seed of SEEDS) {
      const forest = growForest(data, dimensions, { trees: 100, subsample: 256, seed })
      const scores = new Float64Array(rows)
      for (let r = 0; r < rows; r++) {
        for (let d = 0; d < dimensions; d++) point[d] = data[r * dimensions + d] as number
        scores[r] = forest.score(point)
      }
      results.push(auroc(scores, labels))
    }
    const mean = results.reduce((a, b) => a + b, 0) / results.length
    console.log(
      `ODDS shuttle AUROC, 100 trees, ψ 256: ${results.map((a, i) => `seed ${SEEDS[i]} ${a.toFixed(5)}`).join(', ')}; mean ${mean.toFixed(5)} (published ${PUBLISHED})`,
    )
    for (const a of results) expect(a).toBeGreaterThanOrEqual(PUBLISHED - TOLERANCE)
    expect(Math.abs(mean - PUBLISHED)).toBeLessThanOrEqual(TOLERANCE)
  })
})
