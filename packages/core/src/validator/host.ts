import ipaddr from 'ipaddr.js'

/**
 * Host validation (RFC 9112 §3.2, RFC 3986 §3.2.2), checked against nginx's verdicts
 * in shared/corpora/nginx-host-header-cases. Returns the normalised host nginx
 * derives — lower-case, no port, no trailing dot — or `undefined` when invalid.
 *
 * Hand-written rather than `new URL()`: WHATWG URL parsing accepts and rewrites
 * what RFC 9112 forbids (backslashes, decimal IPv4, percent-decoding).
 *
 * @example
 * normalizeHost('Example.COM.:8080') // 'example.com'
 * normalizeHost('exa/mple.com')      // undefined
 */
export function normalizeHost(value: string): string | undefined {
  if (value.length === 0 || value.length > 255 + 6) return undefined
  let host: string
  let rest: string
  if (value.charCodeAt(0) === 0x5b /* [ */) {
    const close = value.indexOf(']')
    if (close < 0) return undefined
    const literal = value.slice(1, close)
    if (!isIpLiteral(literal)) return undefined
    host = value.slice(0, close + 1).toLowerCase()
    rest = value.slice(close + 1)
  } else {
    const colon = value.indexOf(':')
    host = colon < 0 ? value : value.slice(0, colon)
    rest = colon < 0 ? '' : value.slice(colon)
    if (!REG_NAME.test(host)) return undefined
    // Consecutive dots or a leading dot mean an empty label (nginx refuses both).
    if (host.charCodeAt(0) === 0x2e || host.includes('..')) return undefined
    if (host.endsWith('.')) host = host.slice(0, -1)
    if (host.length === 0) return undefined
    host = host.toLowerCase()
  }
  if (rest.length > 0) {
    // Only ":" port, and the port may be empty (RFC 3986 allows `host:`).
    if (rest.charCodeAt(0) !== 0x3a || !PORT.test(rest.slice(1))) return undefined
    if (rest.length > 1 && Number(rest.slice(1)) > 65_535) return undefined
  }
  return host
}

/**
 * The port an authority names, as a number; `fallback` (the scheme's default)
 * when it names none or an empty one (RFC 3986 §3.2.3: `host:` is the default
 * port). Only meaningful for an authority `normalizeHost` accepted.
 *
 * @example
 * authorityPort('example.com:8080', 80) // 8080
 * authorityPort('[::1]', 443)           // 443
 */
export function authorityPort(authority: string, fallback: number): number {
  const close = authority.charCodeAt(0) === 0x5b /* [ */ ? authority.indexOf(']') + 1 : 0
  const colon = authority.indexOf(':', close)
  if (colon < 0 || colon === authority.length - 1) return fallback
  return Number(authority.slice(colon + 1))
}

// reg-name = *( unreserved / pct-encoded / sub-delims ), RFC 3986 §3.2.2
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=%]+$/
const PORT = /^[0-9]{0,5}$/
// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
const IP_FUTURE = /^v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+$/

function isIpLiteral(literal: string): boolean {
  if (literal.charCodeAt(0) === 0x76 || literal.charCodeAt(0) === 0x56) return IP_FUTURE.test(literal)
  return ipaddr.IPv6.isValid(literal) && !literal.includes('%')
}

/**
 * A compiled Host allowlist: exact names, `*.suffix` wildcards and RegExps, all on the normalised host.
 *
 * @example
 * const allowed = compileHostAllowlist(['example.com', '*.api.example.com'])
 * allowed('v1.api.example.com') // true
 */
export type HostMatcher = (normalizedHost: string) => boolean

export function compileHostAllowlist(entries: readonly (string | RegExp)[]): HostMatcher {
  const exact = new Set<string>()
  const suffixes: string[] = []
  const patterns: RegExp[] = []
  for (const entry of entries) {
    if (entry instanceof RegExp) patterns.push(entry)
    else if (entry.startsWith('*.')) suffixes.push(entry.slice(1).toLowerCase().replace(/\.$/, ''))
    else exact.add(normalizeHost(entry) ?? entry.toLowerCase())
  }
  return (host) =>
    exact.has(host) || suffixes.some((s) => host.endsWith(s)) || patterns.some((p) => p.test(host))
}
