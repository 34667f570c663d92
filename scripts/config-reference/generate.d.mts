/**
 * Types of generate.mjs, for the TypeScript test that keeps the generated reference
 * current (packages/core/test/config-reference.test.ts). The script itself is plain
 * JavaScript.
 */
import type { z } from 'zod'

/** A JSON Schema node, as far as these functions read it. */
export type JsonSchema = Record<string, unknown>

export declare const SCHEMA_ID: string
export declare const REFERENCE_START: string
export declare const REFERENCE_END: string
/** The pattern of a whole `${NAME}` / `${NAME:-default}` value. */
export declare const ENV_REFERENCE_PATTERN: string

/**
 * `z.toJSONSchema(optionsSchema, { io: 'input', … })`, with the values only code can pass
 * still marked: what `fileSchema()` and `referenceTable()` start from.
 */
export declare function convertOptions(optionsSchema: z.ZodType): JsonSchema

/** The part of a converted node a file can hold; `undefined` when only code can give it. */
export declare function fileForm(node: JsonSchema): JsonSchema | undefined

/** The JSON Schema of a config file (`packages/core/config-schema.json`). */
export declare function fileSchema(converted: JsonSchema): JsonSchema

/**
 * A regex source matching, without flags, what it matches with the `i` flag.
 *
 * @example
 * caseFolded('^https?:') // '^[hH][tT][tT][pP][sS]?:'
 */
export declare function caseFolded(source: string): string

/**
 * A Markdown code span of `text`, safe in a table cell.
 *
 * @example
 * code('a`|b') // '``a`\\|b``'
 */
export declare function code(text: string): string

/** GitHub's anchor of each heading of a Markdown text, by its text (backticks dropped). */
export declare function headingAnchors(markdown: string): Map<string, string>

/** The reference table: one row per option path. */
export declare function referenceTable(converted: JsonSchema, configurationMd: string): string

/** The reference table between its marker comments. */
export declare function referenceBlock(converted: JsonSchema, configurationMd: string): string

/** `markdown` with its marked block replaced by `block`; throws when the markers are missing. */
export declare function replaceBlock(markdown: string, block: string): string

/** The schema file's text, formatted by prettier with the repository's settings for `filepath`. */
export declare function schemaText(schema: JsonSchema, filepath: string): Promise<string>

/** Both generated files' new text. */
export declare function generate(inputs: {
  readonly optionsSchema: z.ZodType
  readonly configurationMd: string
  readonly operationsMd: string
  readonly schemaPath: string
}): Promise<{ readonly schemaJson: string; readonly operationsMd: string }>
