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
import { pathOf } from '../kernel/url.js'

/** A query parameter's name: what precedes its `=`. */
const paramName = (p: string): string => {
  const eq = p.indexOf('=')
  return eq < 0 ? p : p.slice(0, eq)
}

/**
 * The query with its parameters sorted by name (`?b=2&a=1` and `?a=1&b=2` are one entry),
 * empty ones dropped. Split on `&` only: a `;` stays inside its parameter, so a backend that
 * splits on `;` too (parameter cloaking) cannot be handed a parameter the key does not hold.
 * The sort is by name and stable: the values of a repeated name keep their order, which a
 * backend reading the first (or the last) one answers by (`?id=2&id=1` is not `?id=1&id=2`).
 */
function sortedQuery(url: string): string {
  const q = url.indexOf('?')
  if (q < 0 || q === url.length - 1) return ''
  const params = url
    .slice(q + 1)
    .split('&')
    .filter((p) => p !== '')
  if (params.length === 0) return ''
  const named = params.map((p) => [paramName(p), p] as const)
  named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `?${named.map(([, p]) => p).join('&')}`
}

/** A request field as a key part: comma-joined when repeated, whitespace runs collapsed. */
export const fieldOf = (headers: IncomingHttpHeaders, name: string): string => {
  const value = headers[name]
  if (value === undefined) return ''
  return (Array.isArray(value) ? value.join(', ') : value).trim().replace(/\s+/g, ' ')
}

/**
 * The host as a key part: lower-case, without the scheme's default port, and any character
 * no host name, IP literal or port holds percent-encoded (`%` too). The path follows the
 * host in the key with no separator: with the validator off, a `Host: example.com/admin`
 * would otherwise make `GET /x` the entry of `GET /admin/x`.
 *
 * @example
 * keyHost('API.example.com:80') // 'api.example.com'
 * keyHost('example.com/admin')  // 'example.com%2Fadmin'
 */
export const keyHost = (host: string | undefined): string =>
  (host ?? '')
    .toLowerCase()
    .replace(/:80$/, '')
    .replace(/[^a-z0-9.:[\]-]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)

/**
 * The base of a key (method, host, path and sorted query): what `Vary` is looked up under.
 * The path as the request gave it: dot segments are not removed, because an app reached
 * without the gateway sees `/a/./b` as it came (and may answer it otherwise than `/a/b`);
 * spellings the gateway forwards alike only cost an entry each.
 *
 * @example
 * baseKey('GET', 'example.com', '/items?b=2&a=1') // 'GET example.com/items?a=1&b=2'
 */
export function baseKey(method: string, host: string | undefined, url: string): string {
  return `${method === 'HEAD' ? 'GET' : method} ${keyHost(host)}${pathOf(url)}${sortedQuery(url)}`
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
