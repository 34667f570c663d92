/**
 * What counts as a secret, for every place Aegis writes something an operator or a
 * reader may see: the values of options with these names in configuration errors
 * (options/index.ts), and whatever reaches the audit trail (audit/redact.ts).
 */

/** Option and field names whose values are secrets (`password`, `apiKey`, `authorization`, `privateKey`, …). */
export const SECRET_KEY = /pass(word)?|secret|token|api[-_]?key|auth|credential|cookie|private[-_]?key/i

/** `scheme://user:password@host` → `scheme://***@host`: the credentials of a URL, wherever it sits in a string. */
export const hideUrlCredentials = (text: string): string => text.replace(/(\w+:\/\/)[^/@\s]*@/g, '$1***@')
