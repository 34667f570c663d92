import { z } from 'zod'
import { method, section } from '../kernel/option-helpers.js'

export const DEFAULT_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/** Request hardening options. */
export const validatorSchema = z.strictObject({
  /** Largest request body accepted, checked on Content-Length and while streaming. */
  maxBodyBytes: z
    .int()
    .min(0)
    .default(1024 * 1024),
  /** Methods accepted; anything else gets 405 with `Allow`. TRACE and CONNECT are refused by default. */
  methods: z
    .array(method)
    .min(1)
    .default([...DEFAULT_METHODS]),
  /** Most request header fields accepted (Node itself truncates silently past 2,000 lines). */
  maxHeaders: z.int().min(1).max(1000).default(100),
  /** Longest single header value, in bytes. */
  maxHeaderBytes: z
    .int()
    .min(64)
    .default(8 * 1024),
  /** Hosts the request may name (Host or absolute-form authority). Unset: any valid host. */
  allowedHosts: z
    .array(z.union([z.string().min(1), z.instanceof(RegExp)]))
    .min(1)
    .optional(),
  /** Refuse `..` segments in any spelling (percent, double-percent, backslash, `;` parameters). */
  traversal: z.boolean().default(true),
})

export const validatorSection = section(validatorSchema)
export type ValidatorOptions = z.input<typeof validatorSchema>
export type ValidatorConfig = z.output<typeof validatorSchema>
