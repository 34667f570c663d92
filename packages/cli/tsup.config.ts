import { defineConfig } from 'tsup'

// ESM only: a command and the functions behind it, for Node 20.19+ which loads ESM from require() too.
export default defineConfig({
  entry: ['src/index.ts', 'src/bin.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  clean: true,
  sourcemap: true,
  target: 'node20',
})
