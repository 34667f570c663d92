import type { RequestHandler, Response } from 'express'
import type { Aegis, Rejection, RouteSchemas } from '@aegis/core'

/** Write a rejection the Express way. */
export const send = (res: Response, r: Rejection): void =>
  void res.status(r.status).set(r.headers).send(r.body)

/**
 * `shield.validate(schemas)`: per-route zod validation, after the body parser.
 *
 * @example
 * app.post('/users', express.json(), validator(core, { body: z.object({ name: z.string() }) }), handler)
 */
export function validator(core: Aegis, schemas: RouteSchemas): RequestHandler {
  const check = core.routeValidator(schemas)
  return function aegisValidate(req, res, next) {
    const result = check({ query: req.query, params: req.params, body: req.body as unknown })
    if (!result.ok) {
      core.countRejection(result.rejection)
      return send(res, result.rejection)
    }
    // Parsed values (coerced, defaulted) replace the raw ones. Express 5's `req.query` is a getter
    // on the prototype: shadow it on this request.
    if (schemas.body !== undefined) req.body = result.value.body
    if (schemas.params !== undefined) req.params = result.value.params as typeof req.params
    if (schemas.query !== undefined)
      Object.defineProperty(req, 'query', {
        value: result.value.query,
        configurable: true,
        enumerable: true,
        writable: true,
      })
    if (req.aegis !== undefined) req.aegis.input = result.value
    next()
  }
}
