import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Engine } from '../kernel/engine.js'
import { ErrorCodes } from '../kernel/errors.js'
import type { Logger } from '../kernel/logger.js'
import { problem } from '../kernel/problem.js'
import type { Metrics } from './index.js'

/** A scrape: the exposition, or the 500 problem of a registry that failed to collect. */
export interface Scrape {
  readonly status: number
  readonly contentType: string
  readonly body: string
}

/** The metrics engine's own entry points (`aegis.scrapeMetrics()`, `aegis.metricsHandler`). */
export interface MetricsApi {
  readonly metrics: Metrics
  /** Never rejects: a failed scrape (a throwing collect() on a registry the app passed) is a 500 problem. */
  scrape: () => Promise<Scrape>
  /** A `(req, res)` handler serving the exposition. */
  handle: (req: IncomingMessage, res: ServerResponse) => void
}

const scrapeFailed = problem({
  status: 500,
  code: ErrorCodes.INTERNAL,
  reason: 'metrics',
  title: 'Internal Server Error',
  detail: 'The metrics could not be collected.',
})

/**
 * Metrics as an engine: every observed request counted by method, route template and
 * status; the exposition served at `path` before the app.
 *
 * @example
 * const engine = metricsEngine(createMetrics(config.metrics), config.metrics.path, logger)
 */
export function metricsEngine(
  metrics: Metrics,
  path: string | undefined,
  logger: Logger | undefined,
): Engine & { readonly api: MetricsApi } {
  const api: MetricsApi = {
    metrics,
    async scrape() {
      try {
        return { status: 200, ...(await metrics.scrape()) }
      } catch (err) {
        logger?.error({ err, code: ErrorCodes.INTERNAL }, 'metrics scrape failed')
        return {
          status: scrapeFailed.status,
          contentType: scrapeFailed.headers['content-type'] as string,
          body: scrapeFailed.body,
        }
      }
    },
    handle(_req, res) {
      void api.scrape().then((scraped) => {
        if (res.headersSent) return
        res.statusCode = scraped.status
        res.setHeader('content-type', scraped.contentType)
        res.setHeader('cache-control', 'no-store')
        res.end(scraped.body)
      })
    },
  }
  return {
    name: 'metrics',
    api,
    endpoints: path === undefined ? [] : [{ method: 'GET', path, handle: api.handle }],
    observe(req, state, seen) {
      metrics.request(req.method ?? 'OTHER', state.route as string, seen.status, seen.ms / 1e3)
    },
  }
}
