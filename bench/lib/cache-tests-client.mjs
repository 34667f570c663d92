/**
 * One run of the cache-tests suite against `base` (`node
 * bench/lib/cache-tests-client.mjs http://127.0.0.1:PORT`), in a process of
 * its own: the suite's runner keeps its tests and results in module state, so
 * a second run in the same process would add to the first. Sends
 * `{ type: 'results', results, answers }` over IPC and exits: `results` is the
 * runner's `getResults()` (test id → `true` or `[errorName, message]`),
 * `answers` what the stale tests' requests got back (see `watch`).
 *
 * Runs what the suite's CLI runs, the way it runs it: its runner, its test
 * groups, its HTTP client (node-fetch 2), without a browser cache. One change:
 * every request gives up after REQUEST_TIMEOUT_MS (the suite's newer runner does
 * the same), so a hung exchange fails its test instead of stalling the run.
 */
import { STALE_TESTS, importSuite, loadGroups, suiteFetch } from './cache-tests-suite.mjs'

const REQUEST_TIMEOUT_MS = 10_000

const base = process.argv[2]
if (base === undefined || !/^http:\/\/127\.0\.0\.1:\d+$/.test(base)) {
  console.error('usage: node bench/lib/cache-tests-client.mjs http://127.0.0.1:PORT')
  process.exit(2)
}

const [{ runTests, getResults }, groups, fetch] = await Promise.all([
  importSuite('client/runner.mjs'),
  loadGroups(),
  suiteFetch(),
])
const WATCHED = new Set(Object.values(STALE_TESTS).flat())
const answers = {}
const headerOf = (init, name) => init?.headers?.find?.(([n]) => n.toLowerCase() === name)?.[1]

/**
 * What each request of a watched test got: its status and the origin's
 * `Server-Request-Count` (absent from an answer the origin did not write), or
 * the error. The suite's result alone cannot tell a stale answer from an
 * error answer in its stale-close-* tests (both fail them: "comes from
 * cache"); these can.
 */
async function watch(id, request, response) {
  try {
    const res = await response
    ;(answers[id] ??= {})[request] = {
      status: res.status,
      serverRequestCount: res.headers.get('server-request-count'),
    }
    return res
  } catch (err) {
    ;(answers[id] ??= {})[request] = { error: `${err?.name}: ${err?.message}` }
    throw err
  }
}

// node-fetch 2's own `timeout` option: the request fails with a FetchError past it.
const timedFetch = (url, init) => {
  const response = fetch(url, { timeout: REQUEST_TIMEOUT_MS, ...init })
  const id = headerOf(init, 'test-id')
  return WATCHED.has(id) ? watch(id, headerOf(init, 'req-num'), response) : response
}

await runTests(groups, timedFetch, false, base)
process.send({ type: 'results', results: getResults(), answers }, () => process.exit(0))
