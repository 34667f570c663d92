import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const alias = {
  '@aegis/core': fileURLToPath(new URL('./packages/core/src/index.ts', import.meta.url)),
  '@aegis/express': fileURLToPath(new URL('./packages/express/src/index.ts', import.meta.url)),
  '@aegis/fastify': fileURLToPath(new URL('./packages/fastify/src/index.ts', import.meta.url)),
  '@aegis/koa': fileURLToPath(new URL('./packages/koa/src/index.ts', import.meta.url)),
  '@aegis/cli': fileURLToPath(new URL('./packages/cli/src/index.ts', import.meta.url)),
}

const project = (name: string, include: string[]) => ({
  resolve: { alias },
  test: {
    name,
    include,
    globalSetup: [fileURLToPath(new URL('./test/setup/redis.ts', import.meta.url))],
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
})

export default defineConfig({
  test: {
    projects: [
      project('core', ['packages/core/test/**/*.test.ts']),
      project('express', ['packages/express/test/**/*.test.ts']),
      project('fastify', ['packages/fastify/test/**/*.test.ts']),
      project('koa', ['packages/koa/test/**/*.test.ts']),
      project('cli', ['packages/cli/test/**/*.test.ts']),
      project('conformance', ['test/conformance/**/*.test.ts']),
      project('corpora', ['test/corpora/**/*.test.ts']),
      // The benchmarks' own helpers that deserve a test (the anomaly simulator's generator).
      project('bench', ['test/bench/**/*.test.ts']),
    ],
  },
})
