import { z } from 'zod'
import { headerValue, responseHeaderName, section } from '../kernel/option-helpers.js'

const cspDirectives = z.record(
  z.string().regex(/^[a-z-]+$/, 'expected a CSP directive name such as default-src'),
  z.union([z.array(headerValue), headerValue, z.literal(true)]),
)

/** Security headers, helmet's set with stricter framing; all switchable. */
export const headersSchema = z.strictObject({
  /** `X-Content-Type-Options: nosniff` */
  contentTypeOptions: z.boolean().default(true),
  /** `X-Frame-Options` */
  frameOptions: z.enum(['DENY', 'SAMEORIGIN']).or(z.literal(false)).default('DENY'),
  /** `Referrer-Policy` */
  referrerPolicy: z
    .enum([
      'no-referrer',
      'no-referrer-when-downgrade',
      'origin',
      'origin-when-cross-origin',
      'same-origin',
      'strict-origin',
      'strict-origin-when-cross-origin',
      'unsafe-url',
    ])
    .or(z.literal(false))
    .default('no-referrer'),
  /** `Permissions-Policy`: powerful features off unless the app turns them on. */
  permissionsPolicy: headerValue
    .or(z.literal(false))
    .default('camera=(), microphone=(), geolocation=(), payment=(), usb=(), browsing-topics=()'),
  /** `Strict-Transport-Security` */
  hsts: z
    .strictObject({
      maxAge: z.int().min(0).default(31_536_000),
      includeSubDomains: z.boolean().default(true),
      preload: z.boolean().default(false),
    })
    .or(z.literal(false))
    .prefault({}),
  /** `Cross-Origin-Opener-Policy` */
  crossOriginOpenerPolicy: z
    .enum(['same-origin', 'same-origin-allow-popups', 'unsafe-none'])
    .or(z.literal(false))
    .default('same-origin'),
  /** `Cross-Origin-Resource-Policy` */
  crossOriginResourcePolicy: z
    .enum(['same-origin', 'same-site', 'cross-origin'])
    .or(z.literal(false))
    .default('same-origin'),
  /** `Cross-Origin-Embedder-Policy` (off: it breaks pages embedding third-party resources). */
  crossOriginEmbedderPolicy: z
    .enum(['require-corp', 'credentialless', 'unsafe-none'])
    .or(z.literal(false))
    .default(false),
  // The four below are helmet defaults that protect against little today, so
  // they are opt-in: every header costs bytes and CPU on every response.
  /** `Origin-Agent-Cluster: ?1` (browsers now key agent clusters by origin by default). */
  originAgentCluster: z.boolean().default(false),
  /** `X-DNS-Prefetch-Control: off` (a privacy hint, not a defence). */
  dnsPrefetchControl: z.boolean().default(false),
  /** `X-Permitted-Cross-Domain-Policies: none` (Flash and Acrobat cross-domain files). */
  permittedCrossDomainPolicies: z.boolean().default(false),
  /** `X-XSS-Protection: 0` (turns off the XSS auditor that only legacy browsers still have). */
  xssProtection: z.boolean().default(false),
  /** `Content-Security-Policy`: off by default; a string, or directives. */
  contentSecurityPolicy: z.union([z.literal(false), headerValue, cspDirectives]).default(false),
  /** Report-only CSP, for rolling a policy out. */
  contentSecurityPolicyReportOnly: z.union([z.literal(false), headerValue, cspDirectives]).default(false),
  /** Remove `X-Powered-By` (Express sets it). */
  removePoweredBy: z.boolean().default(true),
  /** Extra fixed headers to set on every response (never framing or hop-by-hop fields). */
  extra: z.record(responseHeaderName, headerValue).default({}),
})

export const headersSection = section(headersSchema)
export type HeadersOptions = z.input<typeof headersSchema>
export type HeadersConfig = z.output<typeof headersSchema>
