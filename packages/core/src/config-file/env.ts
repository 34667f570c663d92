/**
 * `${NAME}` references in a config file's string values, replaced by environment
 * variables (the way docker compose reads them): `${NAME}`, `${NAME:-fallback}` (the
 * fallback when NAME is unset or empty; an unset NAME without one is an error), `$${` for a literal `${`. Only values are
 * substituted, after parsing, never keys or the raw text: a variable cannot change
 * the document's structure, whatever it holds.
 */

/** An environment to read `${NAME}` from (`process.env` by default). */
export type ConfigEnv = Readonly<Record<string, string | undefined>>

const REFERENCE = /\$\$\{|\$\{([^}]*)\}?/g
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/** The outcome of substituting one string: the new string, or why it cannot be. */
export type Substitution =
  | { readonly ok: true; readonly value: string; readonly references: number; readonly whole: boolean }
  | { readonly ok: false; readonly message: string }

/**
 * Replace the references in `text` from `env`. `whole`: the text was exactly one
 * reference (a plain YAML scalar such as `max: ${RATE_MAX}` may then be a number).
 *
 * @example
 * substitute('redis://${REDIS_HOST:-127.0.0.1}:6379', { REDIS_HOST: 'cache' })
 * // { ok: true, value: 'redis://cache:6379', references: 1, whole: false }
 */
export function substitute(text: string, env: ConfigEnv): Substitution {
  if (!text.includes('${')) return { ok: true, value: text, references: 0, whole: false }
  let failure: string | undefined
  let references = 0
  let whole = false
  const value = text.replace(REFERENCE, (match, inner: string | undefined, offset: number) => {
    if (match === '$${') return '${'
    if (failure !== undefined) return ''
    if (!match.endsWith('}')) {
      failure = "unclosed '${' (write '$${' for a literal '${')"
      return ''
    }
    const sep = (inner as string).indexOf(':-')
    const name = sep === -1 ? (inner as string) : (inner as string).slice(0, sep)
    if (!NAME.test(name)) {
      failure = `bad variable reference '\${${name}}': expected \${NAME} or \${NAME:-default} (write '$\${' for a literal '\${')`
      return ''
    }
    references++
    whole = offset === 0 && match.length === text.length
    const set = env[name]
    if (sep !== -1 && (set === undefined || set === '')) return (inner as string).slice(sep + 2)
    if (set !== undefined) return set
    failure = `environment variable ${name} is not set`
    return ''
  })
  if (failure !== undefined) return { ok: false, message: failure }
  return { ok: true, value, references, whole: whole && references === 1 }
}
