/**
 * The HTTP cache conformance suite (npm `http-cache-tests`, the suite behind
 * cache-tests.fyi) as bench/cache-tests.mjs reads it: where pnpm installed
 * it, its tests and their kinds, how one result counts, and the results the
 * package ships for well-known caches (same suite version, so comparable).
 *
 * Nothing here touches the network: the suite comes with `pnpm install`.
 */
import { readFileSync, realpathSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'

const require = createRequire(import.meta.url)

/** The installed package's directory (real path, inside pnpm's store). */
export const SUITE_DIR = dirname(realpathSync(require.resolve('http-cache-tests/package.json')))

/** The installed suite's version: its published results are for this very test set. */
export const SUITE_VERSION = JSON.parse(readFileSync(join(SUITE_DIR, 'package.json'), 'utf8')).version

/** Import one of the suite's own modules (it ships ESM without an `exports` map). */
export const importSuite = (path) => import(pathToFileURL(join(SUITE_DIR, path)).href)

/**
 * The suite's own HTTP client: node-fetch 2, its dependency, which its CLI
 * runs with. The global fetch would differ (it rejects some of the suite's
 * request options), and so would the results.
 */
export async function suiteFetch() {
  const fromSuite = createRequire(join(SUITE_DIR, 'package.json'))
  const module = await import(pathToFileURL(fromSuite.resolve('node-fetch')).href)
  return module.default
}

/**
 * The test groups the suite's CLI runs: tests/index.mjs, plus the
 * Surrogate-Control group that the CLI appends (its published results
 * include it).
 *
 * @returns {Promise<Array<{ id: string, name: string, tests: object[] }>>}
 */
export async function loadGroups() {
  const groups = [...(await importSuite('tests/index.mjs')).default]
  const surrogate = (await importSuite('tests/surrogate-control.mjs')).default
  if (!groups.some((g) => g.id === surrogate.id)) groups.push(surrogate)
  return groups
}

/**
 * The tests a client without a browser cache runs (the runner skips
 * `browser_only` ones), flattened: id, group, kind (`required`, `optimal`
 * — an optimal cache passes it —, or `check` — a question, no verdict) and name.
 *
 * @returns {Array<{ id: string, group: string, kind: 'required' | 'optimal' | 'check', name: string }>}
 */
export function testsRun(groups) {
  return groups.flatMap((group) =>
    group.tests
      .filter((t) => t.browser_only !== true)
      .map((t) => ({ id: t.id, group: group.id, kind: t.kind ?? 'required', name: t.name })),
  )
}

/**
 * What one result says. The runner records `true` for a pass and
 * `[errorName, message]` otherwise: `Assertion` is the cache's failure,
 * `Setup` means the test could not be set up (the answer to a request the
 * test relies on was not what it needed — `retry` when the origin saw a
 * request twice), anything else an error of the exchange itself (a
 * connection closed, a timeout).
 *
 * @returns {'pass' | 'fail' | 'setup' | 'error' | 'untested'}
 */
export function outcomeOf(result) {
  if (result === undefined) return 'untested'
  if (result === true) return 'pass'
  if (Array.isArray(result) && result[0] === 'Assertion') return 'fail'
  if (Array.isArray(result) && result[0] === 'Setup') return 'setup'
  return 'error'
}

/** A result's message, for a report line. */
export const detailOf = (result) => (Array.isArray(result) ? `${result[0]}: ${result[1]}` : String(result))

/**
 * The stale-serving tests the ghost cache's issue names, in the suite's own ids:
 * `stale-close` and `stale-503` ask whether a stored response is served
 * stale when the origin fails (checks: a yes is what a ghost cache is for);
 * the `stale-close-*` ones require that it is not, when the response
 * forbids it (`must-revalidate`, `proxy-revalidate`, `no-cache`, `s-maxage`).
 * `stale-sie-*` (the same with `stale-if-error`) come along for context.
 */
export const STALE_TESTS = {
  serve: ['stale-close', 'stale-503'],
  mustNotServe: [
    'stale-close-must-revalidate',
    'stale-close-proxy-revalidate',
    'stale-close-no-cache',
    'stale-close-s-maxage=2',
  ],
  context: ['stale-sie-close', 'stale-sie-503'],
}

/** The shared caches whose results the package ships (results/<name>.json). */
export const REFERENCE_CACHES = ['nginx', 'varnish', 'squid', 'apache', 'trafficserver']

/**
 * Required tests each reference cache passes, by the package's own results
 * files, counted over the same tests as a run here.
 *
 * @returns {Array<{ name: string, passed: number, total: number }>}
 */
export function referenceCounts(tests) {
  const required = tests.filter((t) => t.kind === 'required')
  return REFERENCE_CACHES.map((name) => {
    const results = JSON.parse(readFileSync(join(SUITE_DIR, 'results', `${name}.json`), 'utf8'))
    return { name, passed: required.filter((t) => results[t.id] === true).length, total: required.length }
  })
}
