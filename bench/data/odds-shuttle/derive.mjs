/**
 * Rebuilds shuttle.csv from the UCI Statlog (Shuttle) files the way ODDS derived its
 * shuttle set: `node bench/data/odds-shuttle/derive.mjs shuttle.trn shuttle.tst > shuttle.csv`.
 * The training file's rows come first, then the test file's, each in its own order; class 4
 * is dropped, class 1 is an inlier (0) and classes 2, 3, 5, 6 and 7 are outliers (1). UCI
 * separates values with spaces; copies found elsewhere use commas, so either is read.
 */
import { readFileSync } from 'node:fs'

const files = process.argv.slice(2)
if (files.length === 0) {
  console.error('Usage: node bench/data/odds-shuttle/derive.mjs shuttle.trn shuttle.tst > shuttle.csv')
  process.exit(2)
}

const out = ['a1,a2,a3,a4,a5,a6,a7,a8,a9,outlier']
let outliers = 0
for (const file of files) {
  for (const line of readFileSync(file, 'utf8').split(/\r?\n/)) {
    if (line.trim() === '') continue
    const cells = line.trim().split(/[\s,]+/)
    const values = cells.map(Number)
    if (cells.length !== 10 || !values.every(Number.isInteger))
      throw new Error(`${file}: expected 9 integer attributes and a class, got ${JSON.stringify(line)}`)
    const cls = values[9]
    if (cls === 4) continue
    const outlier = cls === 1 ? 0 : 1
    outliers += outlier
    out.push(`${values.slice(0, 9).join(',')},${outlier}`)
  }
}
process.stdout.write(`${out.join('\n')}\n`)
console.error(`${out.length - 1} points, ${outliers} outliers`)
