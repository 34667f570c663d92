/**
 * The ghost cache's key: what two requests must share for one to be answered with the
 * other's response. Method (GET and HEAD share: a HEAD is answered from a GET's entry),
 * host, path and query as the gateway forwards them, and the request fields the
 * response's `Vary` names. Nothing else: headers no key holds and that could change
 * the answer make the response unlearnable instead (policy.ts), so that no request
 * can plant an answer another client will get.
 */
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { normalizeTarget, pathOf } from '../kernel/url.js'

/**
 * The query with its parameters sorted (`?b=2&a=1` and `?a=1&b=2` are one entry), empty
 * ones dropped. Split on `&` only: a `;` stays inside its parameter, so a backend that
 * splits on `;` too (parameter cloaking) cannot be handed a parameter the key does not hold.
 */
function sortedQuery(url: string): string {
  const q = url.indexOf('?')
  if (q < 0 || q === url.length - 1) return ''
  const params = url
    .slice(q + 1)
    .split('&')
    .filter((p) => p !== '')
  return params.length === 0 ? '' : `?${params.sort().join('&')}`
}

/** A request field as a key part: comma-joined when repeated, whitespace runs collapsed. */
export const fieldOf = (headers: IncomingHttpHeaders, name: string): string => {
  const value = headers[name]
  if (value === undefined) return ''
  return (Array.isArray(value) ? value.join(', ') : value).trim().replace(/\s+/g, ' ')
}

/**
 * The host as a key part: lower-case, without the scheme's default port.
 *
 * @example
 * keyHost('API.example.com:80') // 'api.example.com'
 */
export const keyHost = (host: string | undefined): string => (host ?? '').toLowerCase().replace(/:80$/, '')

/**
 * The base of a key (method, host, path and sorted query): what `Vary` is looked up under.
 *
 * @example
 * baseKey('GET', 'example.com', '/items?b=2&a=1') // 'GET example.com/items?a=1&b=2'
 */
export function baseKey(method: string, host: string | undefined, url: string): string {
  const target = normalizeTarget(url)
  return `${method === 'HEAD' ? 'GET' : method} ${keyHost(host)}${pathOf(target)}${sortedQuery(target)}`
}

/**
 * The whole key: the base, then each field the response varies on (`vary`, sorted
 * lower-case names: `varyNames()`) with the request's value — a missing field is a value
 * too (empty). With `credential`, a hash of the request's `Authorization` and `Cookie`:
 * a route that learns credentialed answers serves each only to the same credential.
 *
 * @example
 * fullKey('GET example.com/', ['accept-language'], { 'accept-language': 'fr' }) // 'GET example.com/\naccept-language: fr'
 */
export function fullKey(
  base: string,
  vary: readonly string[],
  headers: IncomingHttpHeaders,
  credential = false,
): string {
  let key = base
  for (const name of vary) key += `\n${name}: ${fieldOf(headers, name)}`
  if (credential) {
    const secret = `${fieldOf(headers, 'authorization')}\n${fieldOf(headers, 'cookie')}`
    key += `\ncredential: ${createHash('sha256').update(secret).digest('base64url')}`
  }
  return key
}
