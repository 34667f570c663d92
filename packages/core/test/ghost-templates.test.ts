/**
 * Route learning for the ghost cache: paths grouped into templates by the shape of their
 * segments and by how many distinct literals a position has shown, counters per template,
 * samples and the nearest learned sibling — all bounded whatever paths arrive.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { baseKey } from '../src/ghost/key.js'
import { createTemplates, OTHER_TEMPLATE, pathOfBase, type Templates } from '../src/ghost/templates.js'

/** Learn `path` on `host` as the engine would: its template, then `learned()`. */
const learn = (t: Templates, path: string, host = 'example.com'): string => {
  const base = baseKey('GET', host, path)
  const template = t.templateOf(pathOfBase(base))
  t.learned(template, base)
  return template
}

/** A lower-case word of letters only (never an id by its shape), distinct for each `i`. */
const word = (i: number): string => {
  let s = ''
  do {
    s += String.fromCharCode(0x61 + (i % 26))
    i = Math.floor(i / 26)
  } while (i > 0)
  return `w${s}`
}

/** A deterministic pseudo-random source, so a failure can be replayed. */
const random = (seed: number) => () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
  return seed / 2 ** 32
}

describe('templateOf: segments by their shape', () => {
  const t = createTemplates()
  it.each([
    ['/users/42', '/users/:id'],
    ['/users/42/orders/7', '/users/:id/orders/:id'],
    ['/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301', '/items/:uuid'],
    ['/items/3F2504E0-4F89-11D3-9A0C-0305E82C3301/x', '/items/:uuid/x'],
    ['/objects/507f1f77bcf86cd799439011', '/objects/:hash'], // a MongoDB ObjectId
    ['/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709', '/commits/:hash'], // SHA-1
    ['/t/aB3dE6gH9jK2mN5pQ8', '/t/:hash'], // base64url-like
    ['/customers/cus_NffrFeUfNV2Hib', '/customers/:hash'],
    ['/s/k7x9q2m4p8r1t5v3', '/s/:hash'],
    // Words, slugs and short mixed segments stay literal: only cardinality makes them `:param`.
    ['/about', '/about'],
    ['/users/me', '/users/me'],
    ['/blog/my-post-2024-recap', '/blog/my-post-2024-recap'],
    ['/api/v2/status', '/api/v2/status'],
    ['/d/2024-01-31', '/d/2024-01-31'],
    ['/h/deadbeefdeadbeef', '/h/deadbeefdeadbeef'], // hex without a digit is a word
    ['/h/3f2a9c1', '/h/3f2a9c1'], // too short to tell from a name
  ])('%s → %s', (path, template) => expect(t.templateOf(path)).toBe(template))

  it('ignores the query, keeps a trailing slash and empty segments, and knows the root', () => {
    expect(t.templateOf('/users/1?fields=a,b&x=/y/2')).toBe('/users/:id')
    expect(t.templateOf('/users/1/')).toBe('/users/:id/')
    expect(t.templateOf('/users/')).toBe('/users/')
    expect(t.templateOf('/a//b///7')).toBe('/a//b///:id')
    expect(t.templateOf('/')).toBe('/')
    expect(t.templateOf('')).toBe('/')
    expect(t.templateOf('?a=1')).toBe('/')
    expect(t.templateOf('/?a=1')).toBe('/')
  })

  it('gives a target not in origin form one template', () => {
    expect(t.templateOf('*')).toBe(OTHER_TEMPLATE)
    expect(t.templateOf('http://example.com/users/1')).toBe(OTHER_TEMPLATE)
  })

  it('reads a base key through pathOfBase()', () => {
    expect(pathOfBase('GET example.com/users/1?a=1')).toBe('/users/1')
    expect(pathOfBase('GET example.com:8080/')).toBe('/')
    expect(pathOfBase('GET /x')).toBe('/x') // no host
    expect(t.templateOf(pathOfBase(baseKey('HEAD', 'Example.com:80', '/users/9?b=2&a=1')))).toBe('/users/:id')
  })

  it('is its own template, and never throws', () => {
    const u = createTemplates({ distinctPerPosition: 3 })
    for (let i = 0; i < 10; i++) learn(u, `/${word(i)}/${word(i)}`)
    fc.assert(
      fc.property(fc.webPath(), (path) => {
        const template = u.templateOf(path)
        expect(u.templateOf(template)).toBe(template)
      }),
      { numRuns: 2000 },
    )
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const template = u.templateOf(s)
        expect(template === OTHER_TEMPLATE || template.startsWith('/')).toBe(true)
        expect(template.length).toBeLessThanOrEqual(32 * 65 + 6)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('templateOf: literals by cardinality', () => {
  it('keeps the first distinct literals of a position, and makes any other one :param', () => {
    const t = createTemplates()
    for (let i = 0; i < 20; i++) expect(learn(t, `/docs/${word(i)}`)).toBe(`/docs/${word(i)}`)
    // The 21st distinct literal under /docs: :param before it is learned, and after.
    expect(t.templateOf('/docs/changelog')).toBe('/docs/:param')
    expect(learn(t, '/docs/changelog')).toBe('/docs/:param')
    expect(t.templateOf('/docs/changelog')).toBe('/docs/:param')
    expect(t.templateOf('/docs/other/edit')).toBe('/docs/:param/edit')
    // The known ones stay themselves: a URL never changes template.
    expect(t.templateOf(`/docs/${word(3)}`)).toBe(`/docs/${word(3)}`)
    // Other parents are not affected, nor ids, nor structure.
    expect(t.templateOf('/blog/changelog')).toBe('/blog/changelog')
    expect(t.templateOf('/docs/42')).toBe('/docs/:id')
    expect(t.templateOf('/docs/')).toBe('/docs/')
  })

  it('counts positions under their templated parent', () => {
    const t = createTemplates({ distinctPerPosition: 3 })
    // /users/1/a, /users/2/b, /users/3/c: one position, /users/:id, with three literals.
    for (const [id, tab] of [
      [1, 'posts'],
      [2, 'likes'],
      [3, 'stars'],
    ] as const)
      learn(t, `/users/${id}/${tab}`)
    expect(t.templateOf('/users/99/posts')).toBe('/users/:id/posts')
    expect(t.templateOf('/users/99/follows')).toBe('/users/:id/:param')
    // Deeper positions hang under the templated parent, so :param children are shared.
    learn(t, '/users/5/follows/x')
    expect(t.templateOf('/users/6/whatever/x')).toBe('/users/:id/:param/x')
  })

  it('learns only from learned responses: lookups, refusals and serves teach nothing', () => {
    const t = createTemplates({ distinctPerPosition: 5 })
    learn(t, '/api/users')
    const before = t.footprint()
    for (let i = 0; i < 1000; i++) {
      const template = t.templateOf(`/${word(i)}/admin.php`)
      expect(template).toBe(`/${word(i)}/admin.php`)
      t.refused(template, 'status')
      t.served(template, 'error')
    }
    expect(t.footprint().literals).toBe(before.literals)
    expect(t.footprint().positions).toBe(before.positions)
    expect(t.templateOf('/api/users')).toBe('/api/users')
    expect(t.templateOf('/orders/1')).toBe('/orders/:id')
  })

  it('never makes the root, a trailing slash or an empty segment :param', () => {
    const t = createTemplates({ distinctPerPosition: 2 })
    for (let i = 0; i < 5; i++) learn(t, `/${word(i)}/`)
    expect(t.templateOf('/')).toBe('/')
    expect(t.templateOf('/unknown/')).toBe('/:param/')
    expect(t.templateOf('//x')).toBe('//x')
  })

  it('forget() with no template forgets the literals too', () => {
    const t = createTemplates({ distinctPerPosition: 1 })
    learn(t, '/a')
    expect(t.templateOf('/b')).toBe('/:param')
    t.forget()
    expect(t.templateOf('/b')).toBe('/b')
    expect(t.footprint()).toMatchObject({ templates: 0, positions: 1, literals: 0, samples: 0 })
  })
})

describe('counters', () => {
  it('counts learned, served (by reason) and refused (by reason), and distinct keys', () => {
    const t = createTemplates()
    learn(t, '/users/1')
    learn(t, '/users/1') // the same key again
    learn(t, '/users/2?a=1')
    t.served('/users/:id', 'error')
    t.served('/users/:id', 'error')
    t.served('/users/:id', 'synthesized')
    t.refused('/users/:id', 'private')
    t.refused('/me', 'set-cookie')
    t.refused('/me', 'set-cookie')
    t.refused('/me', 'vary-star')
    t.refused('/big', 'too-large')
    expect(t.stats()).toEqual([
      {
        template: '/users/:id',
        learned: 3,
        served: 3,
        servedBy: { error: 2, synthesized: 1 },
        refused: { private: 1 },
        keys: 2,
      },
      {
        template: '/me',
        learned: 0,
        served: 0,
        servedBy: {},
        refused: { 'set-cookie': 2, 'vary-star': 1 },
        keys: 0,
      },
      { template: '/big', learned: 0, served: 0, servedBy: {}, refused: { 'too-large': 1 }, keys: 0 },
    ])
  })

  it('sorts by served, then learned, then refused, then name', () => {
    const t = createTemplates()
    t.refused('/z', 'private')
    t.refused('/a', 'private')
    t.refused('/r', 'private')
    t.refused('/r', 'private')
    t.learned('/l', 'GET h/l')
    t.served('/s', 'error')
    expect(t.stats().map((s) => s.template)).toEqual(['/s', '/l', '/r', '/a', '/z'])
  })

  it('keeps at most 16 reasons per template, the rest under other', () => {
    const t = createTemplates()
    for (let i = 0; i < 40; i++) t.refused('/x', `reason-${i}`)
    const refused = t.stats()[0]?.refused ?? {}
    expect(Object.keys(refused)).toHaveLength(17)
    expect(refused.other).toBe(24)
    expect(refused['reason-0']).toBe(1)
  })

  it('estimates distinct keys past 64 within the estimator’s error', () => {
    const t = createTemplates()
    for (const n of [64, 65, 1000, 20_000]) {
      t.forget()
      for (let i = 0; i < n; i++) t.learned('/users/:id', `GET h/users/${i}`)
      const keys = t.stats()[0]?.keys ?? 0
      if (n <= 64) expect(keys).toBe(n)
      else expect(Math.abs(keys - n) / n).toBeLessThan(0.3)
    }
  })

  it('forget(template) forgets one template only', () => {
    const t = createTemplates()
    learn(t, '/users/1')
    learn(t, '/about')
    t.forget('/users/:id')
    expect(t.stats().map((s) => s.template)).toEqual(['/about'])
    expect(t.siblings('/users/:id')).toEqual([])
  })
})

describe('siblings', () => {
  it('are the learned base keys, most recent first, each once, at most samplesPerTemplate', () => {
    const t = createTemplates({ samplesPerTemplate: 3 })
    for (const id of [1, 2, 3, 2, 4]) learn(t, `/users/${id}`)
    expect(t.siblings('/users/:id')).toEqual([
      'GET example.com/users/4',
      'GET example.com/users/2',
      'GET example.com/users/3',
    ])
    t.unlearned('/users/:id', 'GET example.com/users/2')
    expect(t.siblings('/users/:id')).toEqual(['GET example.com/users/4', 'GET example.com/users/3'])
    expect(t.stats()[0]?.learned).toBe(5)
    expect(t.siblings('/nothing')).toEqual([])
  })

  it('hold at most samplesPerTemplate × 128 characters; a longer base is counted, not kept', () => {
    const t = createTemplates({ samplesPerTemplate: 4 }) // 512 characters
    const long = (i: number) => `GET h/q/${i}?${'x'.repeat(200)}`
    for (let i = 0; i < 4; i++) t.learned('/q/:id', long(i))
    expect(t.siblings('/q/:id')).toEqual([long(3), long(2)])
    t.learned('/q/:id', `GET h/q/9?${'y'.repeat(600)}`)
    expect(t.siblings('/q/:id')).toEqual([long(3), long(2)])
    expect(t.stats()[0]?.learned).toBe(5)
    expect(t.footprint().sampleChars).toBeLessThanOrEqual(512)
  })
})

describe('nearest', () => {
  it('offers only a sibling of the same method and host', () => {
    const t = createTemplates()
    learn(t, '/users/8', 'other.example')
    expect(t.nearest('/users/:id', 'GET example.com/users/8')).toBeUndefined()
    learn(t, '/users/1000')
    expect(t.nearest('/users/:id', 'GET example.com/users/8')).toBe('GET example.com/users/1000')
    expect(t.nearest('/users/:id', 'GET other.example/users/9')).toBe('GET other.example/users/8')
  })

  it('prefers more equal segments, then shared query parameters, then the nearest number, then the newest', () => {
    const t = createTemplates()
    learn(t, '/orgs/9/repos/2')
    learn(t, '/orgs/5/repos/3')
    // /orgs/9/repos/2 shares the org; /orgs/5/repos/3 is nearer by numbers, but shares less.
    expect(t.nearest('/orgs/:id/repos/:id', 'GET example.com/orgs/9/repos/3')).toBe(
      'GET example.com/orgs/9/repos/2',
    )
    // Neither shares a number: the nearest numbers win (|6−5| + |4−3| against |6−9| + |4−2|).
    expect(t.nearest('/orgs/:id/repos/:id', 'GET example.com/orgs/6/repos/4')).toBe(
      'GET example.com/orgs/5/repos/3',
    )

    const u = createTemplates()
    learn(u, '/users/7?expand=1')
    learn(u, '/users/9')
    learn(u, '/users/6')
    learn(u, '/users/10')
    // The query in common beats a nearer id.
    expect(u.nearest('/users/:id', 'GET example.com/users/8?expand=1')).toBe(
      'GET example.com/users/7?expand=1',
    )
    // Without it: the nearest id (9), then, at equal distance (6 and 10 from 8 without 9), the newest.
    expect(u.ranked('/users/:id', 'GET example.com/users/8')).toEqual([
      'GET example.com/users/9',
      'GET example.com/users/7?expand=1',
      'GET example.com/users/10',
      'GET example.com/users/6',
    ])
    // The same URL learned is its own nearest.
    expect(u.nearest('/users/:id', 'GET example.com/users/6')).toBe('GET example.com/users/6')
    expect(u.nearest('/unknown', 'GET example.com/unknown')).toBeUndefined()
  })

  it('compares literals under :param', () => {
    const t = createTemplates({ distinctPerPosition: 1 })
    learn(t, '/docs/intro/1')
    learn(t, '/docs/setup/1')
    learn(t, '/docs/usage/1')
    expect(t.siblings('/docs/:param/:id')).toEqual([
      'GET example.com/docs/usage/1',
      'GET example.com/docs/setup/1',
    ])
    expect(t.nearest('/docs/:param/:id', 'GET example.com/docs/setup/2')).toBe('GET example.com/docs/setup/1')
  })
})

describe('bounds', () => {
  /** A random path: literals (words), ids and tokens, 1 to 6 segments. */
  const randomPath = (next: () => number): string => {
    let path = ''
    const n = 1 + Math.floor(next() * 6)
    for (let i = 0; i < n; i++) {
      const r = next()
      if (r < 0.5) path += `/${word(Math.floor(next() * 1e6))}`
      else if (r < 0.8) path += `/${Math.floor(next() * 1e9)}`
      else path += `/${Math.floor(next() * 2 ** 52).toString(36)}${Math.floor(next() * 2 ** 52).toString(36)}`
    }
    return path
  }

  const drive = (t: Templates, next: () => number, count: number) => {
    for (let i = 0; i < count; i++) {
      const path = `${randomPath(next)}?q=${Math.floor(next() * 1e9)}`
      const template = t.templateOf(path)
      const r = next()
      if (r < 0.5) t.learned(template, baseKey('GET', `h${i % 7}.example`, path))
      else if (r < 0.8) t.refused(template, `reason-${Math.floor(next() * 100)}`)
      else t.served(template, 'error')
      if (i % 1000 === 0) t.nearest(template, baseKey('GET', 'h1.example', path))
    }
  }

  it('holds at most maxTemplates, 2 × as many positions, and bounded literals and samples, under 100k random paths', () => {
    const t = createTemplates({ maxTemplates: 200, samplesPerTemplate: 8 })
    drive(t, random(1), 100_000)
    const f = t.footprint()
    expect(f.templates).toBeLessThanOrEqual(200)
    expect(t.stats().length).toBe(f.templates)
    expect(f.positions).toBeLessThanOrEqual(400 + 1)
    expect(f.literals).toBeLessThanOrEqual(f.positions * 20)
    expect(f.samples).toBeLessThanOrEqual(200 * 8)
    expect(f.sampleChars).toBeLessThanOrEqual(200 * 8 * 128)
    // Random first segments collapse: past 20 known literals, the root's are :param.
    expect(t.templateOf('/neverseen/1')).toBe('/:param/:id')
    for (const s of t.stats()) expect(Object.keys(s.refused).length).toBeLessThanOrEqual(17)
  })

  it('keeps learned templates while a flood of unknown paths is refused', () => {
    // Room for 50 literals at the root, so that the 50 learned templates stay apart.
    const t = createTemplates({ maxTemplates: 100, distinctPerPosition: 50 })
    for (let i = 0; i < 50; i++) learn(t, `/r${word(i)}/1`)
    const next = random(2)
    for (let i = 0; i < 100_000; i++) {
      const path = randomPath(next)
      t.refused(t.templateOf(path), 'status')
    }
    const f = t.footprint()
    expect(f.templates).toBe(100)
    expect(f.learnedTemplates).toBe(50)
    expect(f.evicted).toBeGreaterThan(50_000) // the flood churned the other tier
    for (let i = 0; i < 50; i++)
      expect(t.siblings(`/r${word(i)}/:id`)).toEqual([`GET example.com/r${word(i)}/1`])
  })

  it('retains bounded memory: a second 100k random paths adds almost nothing to the heap', () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const t = createTemplates() // the defaults: 1,000 templates, 32 samples each
    const next = random(3)
    drive(t, next, 100_000)
    gc()
    const first = process.memoryUsage().heapUsed
    const sizes = t.footprint()
    drive(t, next, 100_000)
    gc()
    const growth = process.memoryUsage().heapUsed - first
    expect(t.footprint().templates).toBeLessThanOrEqual(1000)
    expect(t.footprint().positions).toBeLessThanOrEqual(2001)
    expect(sizes.templates).toBe(1000)
    // Full at the first measure; the second 100k replace what is held, they do not add to it.
    expect(growth).toBeLessThan(8 * 1024 * 1024)
  })
})

describe('pathological inputs', () => {
  it('takes linear time on a very long segment, very many segments, and runs of slashes', () => {
    const t = createTemplates()
    const long = `/${'a1'.repeat(2 ** 19)}` // 1 MiB, a token shape all along
    const many = '/a'.repeat(200_000)
    const slashes = '/'.repeat(200_000)
    const started = performance.now()
    expect(t.templateOf(long)).toBe('/:param')
    expect(t.templateOf(`/${'9'.repeat(2 ** 20)}`)).toBe('/:param')
    expect(t.templateOf(many)).toBe(`${'/a'.repeat(32)}/:rest`)
    expect(t.templateOf(slashes)).toBe(`${'/'.repeat(32)}/:rest`)
    expect(t.templateOf(`/x?${'/'.repeat(200_000)}`)).toBe('/x')
    t.learned('/:param', `GET h${long}`)
    t.learned(t.templateOf(many), `GET h${many}`)
    // Each is one pass: a quadratic walk of these would take seconds, not milliseconds.
    expect(performance.now() - started).toBeLessThan(1000)
    expect(t.siblings('/:param')).toEqual([]) // too long to keep as a sample
    expect(t.footprint().positions).toBeLessThanOrEqual(33)
  })

  it('keeps percent-encoded segments as they are written: one segment, a literal, never decoded', () => {
    const t = createTemplates()
    expect(t.templateOf('/files/a%2Fb')).toBe('/files/a%2Fb')
    expect(t.templateOf('/files/%E2%9C%93')).toBe('/files/%E2%9C%93')
    expect(t.templateOf('/files/%zz%')).toBe('/files/%zz%')
    expect(t.templateOf('/users/%31%32')).toBe('/users/%31%32')
    expect(t.templateOf('/ünïcödé/1')).toBe('/ünïcödé/:id')
    // A literal too long to be a route name is :param at once, and never remembered.
    expect(t.templateOf(`/files/${'%41'.repeat(30)}`)).toBe('/files/:param')
    learn(t, `/files/${'%41'.repeat(30)}`)
    expect(t.footprint().literals).toBe(1) // `files` only
  })
})
