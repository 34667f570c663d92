import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { AegisConfigError, type Aegis } from '@aegis/core'

/**
 * The routes of the `proxy` option as Fastify routes (`<prefix>` and `<prefix>/*`), so that
 * Fastify's router decides between them and the app's own routes, in a context of their own
 * where no body parser reads what the gateway streams upstream.
 *
 * @example
 * await registerProxyRoutes(app, core)
 */
export async function registerProxyRoutes(app: FastifyInstance, core: Aegis): Promise<void> {
  if (core.gateway.routes.length === 0) return
  if (app.initialConfig.http2 === true)
    throw new AegisConfigError([
      { path: 'proxy', message: 'proxy routes on a Fastify server with http2: true are not supported yet' },
    ])
  // In a context of their own: no body parser may read what the gateway streams upstream.
  await app.register((gateway, _options, registered) => {
    gateway.removeAllContentTypeParsers()
    gateway.addContentTypeParser('*', (_request, _payload, done) => done(null))
    // Through the routes in force: a reload may change a prefix's upstreams (new prefixes need a restart).
    const handler = (request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined => {
      const forwarded = core.gateway.handle(request.raw, reply.raw, request.raw.url ?? '/')
      if (forwarded === false) return void reply.callNotFound()
      void reply.hijack()
      return forwarded
    }
    for (const route of core.gateway.routes) {
      const { prefix } = route.config
      gateway.all(prefix === '/' ? '/*' : `${prefix}/*`, handler)
      if (prefix !== '/') gateway.all(prefix, handler)
    }
    registered()
  })
}
