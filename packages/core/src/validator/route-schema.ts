import { z } from 'zod'
import { ErrorCodes } from '../kernel/errors.js'
import { problem } from '../kernel/problem.js'
import type { Rejection } from '../kernel/types.js'

/** zod schemas for one route's inputs. */
export interface RouteSchemas<Q = unknown, P = unknown, B = unknown> {
  query?: z.ZodType<Q>
  params?: z.ZodType<P>
  body?: z.ZodType<B>
}

/** The raw inputs as the framework parsed them. */
export interface RouteInput {
  query?: unknown
  params?: unknown
  body?: unknown
}

export type RouteValidator = (
  input: RouteInput,
) => { ok: true; value: RouteInput } | { ok: false; rejection: Rejection }

const PARTS = ['params', 'query', 'body'] as const

const schemasShape = z.strictObject({
  query: z.instanceof(z.ZodType).optional(),
  params: z.instanceof(z.ZodType).optional(),
  body: z.instanceof(z.ZodType).optional(),
})

/**
 * Compile a per-route validator. Every part is checked (all problems are reported
 * at once) and the parsed values — with zod's coercions and defaults — replace
 * the raw ones. A 400 problem lists the issues with `in`, `path` and `message`;
 * the offending values are not echoed back.
 *
 * @example
 * const check = createRouteValidator({ body: z.object({ name: z.string() }) })
 * const result = check({ body: req.body })
 */
export function createRouteValidator(schemas: RouteSchemas): RouteValidator {
  const shape = schemasShape.safeParse(schemas)
  if (!shape.success) {
    throw new TypeError('validate() takes { query?, params?, body? } with a zod schema for each part')
  }
  const parts = PARTS.filter((p) => schemas[p] !== undefined)
  return (input) => {
    const value: RouteInput = {}
    const errors: { in: string; path: string; message: string; code: string }[] = []
    for (const part of parts) {
      const result = (schemas[part] as z.ZodType).safeParse(input[part])
      if (result.success) value[part] = result.data
      else
        for (const issue of result.error.issues)
          errors.push({
            in: part,
            path: issue.path.map(String).join('.'),
            message: issue.message,
            code: issue.code,
          })
    }
    if (errors.length === 0) return { ok: true, value }
    return {
      ok: false,
      rejection: problem({
        status: 400,
        code: ErrorCodes.VALIDATION,
        reason: 'validation',
        title: 'Bad Request',
        detail: `The request ${[...new Set(errors.map((e) => e.in))].join(', ')} did not validate.`,
        extensions: { errors },
      }),
    }
  }
}
