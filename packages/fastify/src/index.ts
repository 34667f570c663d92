import type { FastifyPluginAsync, FastifyReply, FastifyRequest, preValidationHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { registerProxyRoutes } from './gateway.js'
import {
  createAegis,
  type Aegis,
  type AegisOptions,
  type AegisRequestState,
  type Rejection,
  type RouteSchemas,
} from '@aegis/core'

declare module 'fastify' {
  interface FastifyInstance {
    /** The Aegis core instance; closing the app closes it. */
    aegis: Aegis & {
      /** Per-route zod validation as a `preValidation` hook. */
      validate(schemas: RouteSchemas): preValidationHookHandler
    }
  }
  interface FastifyRequest {
    /** Aegis' state for this request: client identity, validated input. */
    aegis: AegisRequestState | undefined
  }
  interface FastifyContextConfig {
    /** `false` takes this route out of Aegis' hands (health probes, webhooks with their own checks). */
    aegis?: boolean
  }
}

const send = (reply: FastifyReply, r: Rejection): FastifyReply =>
  reply.code(r.status).headers(r.headers).send(r.body)

const plugin: FastifyPluginAsync<AegisOptions> = async (app, options) => {
  // fastify passes its own keys (prefix, logLevel…) only on encapsulated plugins; keep ours.
  // Its router is sealed once it listens: a reload may not add proxy prefixes or move the admin mount.
  const core = createAegis(options, { sealedRoutes: true })
  const validate = (schemas: RouteSchemas): preValidationHookHandler => {
    const check = core.routeValidator(schemas)
    return function aegisValidate(request, reply, done) {
      const result = check({ query: request.query, params: request.params, body: request.body })
      if (!result.ok) {
        core.countRejection(result.rejection)
        return void send(reply, result.rejection)
      }
      if (schemas.query !== undefined) request.query = result.value.query
      if (schemas.params !== undefined) request.params = result.value.params
      if (schemas.body !== undefined) request.body = result.value.body
      if (request.aegis !== undefined) request.aegis.input = result.value
      done()
    }
  }
  app.decorate('aegis', Object.assign(core, { validate }))
  app.decorateRequest('aegis', undefined)

  const proceed = (
    request: FastifyRequest,
    reply: FastifyReply,
    done: (err?: Error) => void,
    state: AegisRequestState,
    route: string | undefined,
  ): void => {
    request.aegis = state
    if (route !== undefined) state.route = route
    if (state.rejection === undefined) done()
    else void send(reply, state.rejection)
  }
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done) => {
    // Fastify builds a fresh object on every read of `routeOptions`: read it once.
    const { url, config } = request.routeOptions
    if (config.aegis === false) return done()
    const guarded = core.guard(request.raw, reply.raw)
    if (guarded instanceof Promise) guarded.then((state) => proceed(request, reply, done, state, url), done)
    else proceed(request, reply, done, guarded, url)
  })

  // Aegis' endpoints (metrics, the admin API) and proxy routes as Fastify routes, written by core on
  // the raw response; in a context of their own, where no body parser reads what an endpoint reads.
  await app.register((endpoints, _options, registered) => {
    endpoints.removeAllContentTypeParsers()
    endpoints.addContentTypeParser('*', (_request, _payload, done) => done(null))
    for (const endpoint of core.endpoints)
      for (const url of endpoint.prefix === true ? [endpoint.path, `${endpoint.path}/*`] : [endpoint.path])
        endpoints.route({
          method: endpoint.method,
          url,
          handler: (request, reply) => endpoint.handle(request.raw, reply.hijack().raw),
        })
    registered()
  })
  await registerProxyRoutes(app, core)

  // Timeout warnings and CONNECT refusal; Fastify drains its own server on close, but waits for upgraded
  // sockets (proxied WebSockets) it cannot end itself: they are ended at closeTimeout, as attached servers' are.
  core.attach(app.server, { drain: false })
  let endUpgrades: NodeJS.Timeout | undefined
  app.addHook('preClose', (done) => {
    endUpgrades = setTimeout(() => core.gateway.endUpgrades(), core.config.closeTimeout).unref()
    done()
  })
  app.addHook('onClose', async () => {
    clearTimeout(endUpgrades)
    await core.close()
  })
}

/**
 * Aegis for Fastify 5.
 *
 * @example
 * await app.register(aegis, { metrics: { path: '/metrics' } })
 * app.get('/health', { config: { aegis: false } }, () => 'ok')
 */
export const aegis: FastifyPluginAsync<AegisOptions> = fp(plugin, { fastify: '5.x', name: '@aegis/fastify' })

export default aegis
export type { AegisOptions, AegisRequestState } from '@aegis/core'
export { AegisConfigError, AegisError, ErrorCodes, WarningCodes } from '@aegis/core'
