import type { HeaderList } from '../kernel/types.js'
import type { HeadersConfig } from './options.js'

export { headersSchema } from './options.js'
export type { HeadersOptions, HeadersConfig } from './options.js'

type Csp = HeadersConfig['contentSecurityPolicy']

function serializeCsp(csp: Exclude<Csp, false>): string {
  if (typeof csp === 'string') return csp
  return Object.entries(csp)
    .map(([name, value]) =>
      value === true ? name : `${name} ${Array.isArray(value) ? value.join(' ') : value}`,
    )
    .join('; ')
}

/**
 * The security header fields, computed once: every response gets the same list.
 *
 * @example
 * const list = securityHeaders(parseOptions().headers as HeadersConfig)
 */
export function securityHeaders(config: HeadersConfig): HeaderList {
  const list: [string, string][] = []
  const add = (name: string, value: string | false | undefined): void => {
    if (value !== false && value !== undefined) list.push([name, value])
  }
  add('x-content-type-options', config.contentTypeOptions && 'nosniff')
  add('x-frame-options', config.frameOptions)
  add('referrer-policy', config.referrerPolicy)
  add('permissions-policy', config.permissionsPolicy)
  if (config.hsts !== false) {
    const h = config.hsts
    add(
      'strict-transport-security',
      `max-age=${h.maxAge}${h.includeSubDomains ? '; includeSubDomains' : ''}${h.preload ? '; preload' : ''}`,
    )
  }
  add('cross-origin-opener-policy', config.crossOriginOpenerPolicy)
  add('cross-origin-resource-policy', config.crossOriginResourcePolicy)
  add('cross-origin-embedder-policy', config.crossOriginEmbedderPolicy)
  add('origin-agent-cluster', config.originAgentCluster && '?1')
  add('x-dns-prefetch-control', config.dnsPrefetchControl && 'off')
  add('x-permitted-cross-domain-policies', config.permittedCrossDomainPolicies && 'none')
  add('x-xss-protection', config.xssProtection && '0')
  if (config.contentSecurityPolicy !== false)
    add('content-security-policy', serializeCsp(config.contentSecurityPolicy))
  if (config.contentSecurityPolicyReportOnly !== false)
    add('content-security-policy-report-only', serializeCsp(config.contentSecurityPolicyReportOnly))
  for (const [name, value] of Object.entries(config.extra)) add(name.toLowerCase(), value)
  return Object.freeze(list.map((pair) => Object.freeze(pair)))
}
