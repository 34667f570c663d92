import { Registry, register as globalRegistry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { createAegis, templatize } from '../src/index.js'
import { createRouteLearner } from '../src/metrics/index.js'

describe('route templates', () => {
  it.each([
    ['/users/42', '/users/:id'],
    ['/users/42/orders/7?x=1', '/users/:id/orders/:id'],
    ['/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301', '/items/:id'],
    ['/blobs/deadbeefcafe1234', '/blobs/:id'],
    ['/t/aB3dE6gH9jK2mN5pQ8', '/t/:id'],
    ['/about', '/about'],
    ['/', '/'],
  ])('%s → %s', (path, template) => expect(templatize(path)).toBe(template))

  it('stays bounded under random URLs', () => {
    const learner = createRouteLearner(50)
    const seen = new Set<string>()
    for (let i = 0; i < 10_000; i++)
      seen.add(learner.template(`/${Math.random().toString(36).slice(2, 8)}x/page`))
    expect(seen.size).toBeLessThanOrEqual(51)
    expect(seen.has('(other)')).toBe(true)
  })
})

describe('metrics registry', () => {
  it('never registers on the global registry', async () => {
    const before = (await globalRegistry.getMetricsAsJSON()).length
    const aegis = createAegis()
    expect((await globalRegistry.getMetricsAsJSON()).length).toBe(before)
    expect(aegis.metrics?.registry).not.toBe(globalRegistry)
    await aegis.close()
  })

  it('uses a registry the user passes, with a prefix', async () => {
    const registry = new Registry()
    const aegis = createAegis({ metrics: { registry, prefix: 'edge_' } })
    const text = await registry.metrics()
    expect(text).toContain('edge_http_requests_total')
    expect(text).toContain('edge_rejections_total')
    await aegis.close()
  })

  it('can be turned off', async () => {
    const aegis = createAegis({ metrics: false })
    expect(aegis.metrics).toBeUndefined()
    expect(await aegis.scrapeMetrics()).toBeUndefined()
    await aegis.close()
  })
})

describe('request series', () => {
  it('expose the same text as prom-client Counter and Histogram would', async () => {
    const { Counter, Histogram } = await import('prom-client')
    const { createMetrics } = await import('../src/metrics/index.js')
    const buckets = [0.01, 0.1, 1]
    const ours = createMetrics({ prefix: 'x_', buckets, maxRoutes: 10, defaultMetrics: false })
    const reference = new Registry()
    const labelNames = ['method', 'route', 'status_class'] as const
    const count = new Counter({
      name: 'x_http_requests_total',
      help: 'h',
      labelNames,
      registers: [reference],
    })
    const hist = new Histogram({
      name: 'x_http_request_duration_seconds',
      help: 'h',
      labelNames,
      buckets,
      registers: [reference],
    })
    const samples: [string, string, number, number][] = [
      ['GET', '/a', 200, 0.005],
      ['GET', '/a', 200, 0.05],
      ['GET', '/a', 404, 2],
      ['POST', '/b/:id', 503, 0.1],
      ['GET', '/a', 200, 0.01],
    ]
    for (const [method, route, status, seconds] of samples) {
      ours.request(method, route, status, seconds)
      const labels = { method, route, status_class: `${Math.floor(status / 100)}xx` }
      count.inc(labels)
      hist.observe(labels, seconds)
    }
    const lines = (text: string, name: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .map((l) => l.replace(/\{(.*)\}/, (_m, inner: string) => `{${inner.split(',').sort().join(',')}}`))
        .sort()
    const a = await ours.registry.metrics()
    const b = await reference.metrics()
    for (const name of ['x_http_requests_total', 'x_http_request_duration_seconds'])
      expect(lines(a, name)).toEqual(lines(b, name))
  })
})
