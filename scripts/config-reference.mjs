/**
 * Regenerate the config file reference from the options schema of the built package —
 * packages/core/config-schema.json and the table between the config-reference markers of
 * docs/operations.md. `pnpm docs:config` builds @aegis/core, then runs this. See
 * scripts/config-reference/generate.mjs; packages/core/test/config-reference.test.ts fails
 * while either output is stale.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { generate } from './config-reference/generate.mjs'

const root = new URL('../', import.meta.url)
const at = (path) => fileURLToPath(new URL(path, root))
const paths = {
  core: at('packages/core/dist/index.js'),
  schema: at('packages/core/config-schema.json'),
  configuration: at('docs/configuration.md'),
  operations: at('docs/operations.md'),
}

let core
try {
  core = await import(paths.core)
} catch (err) {
  console.error(`cannot import ${paths.core}: run \`pnpm build\` first (${err.message})`)
  process.exit(1)
}

const { schemaJson, operationsMd } = await generate({
  optionsSchema: core.optionsSchema,
  configurationMd: await readFile(paths.configuration, 'utf8'),
  operationsMd: await readFile(paths.operations, 'utf8'),
  schemaPath: paths.schema,
})

for (const [path, text] of [
  [paths.schema, schemaJson],
  [paths.operations, operationsMd],
]) {
  const before = await readFile(path, 'utf8').catch(() => undefined)
  if (before === text) {
    console.log(`unchanged: ${path}`)
  } else {
    await writeFile(path, text)
    console.log(`written:   ${path}`)
  }
}
