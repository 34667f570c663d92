import { Registry, register as globalRegistry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { createAegis, createRouteLearner, templatize } from '../src/index.js'

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
