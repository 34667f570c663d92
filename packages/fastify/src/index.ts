import type { FastifyPluginAsync, FastifyReply, FastifyRequest, preValidationHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import {
  AegisConfigError,
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
  const core = createAegis(options)
  const metricsPath = core.config.metrics === false ? undefined : core.config.metrics.path

  app.decorate(
    'aegis',
    Object.assign(core, {
      validate(schemas: RouteSchemas): preValidationHookHandler {
        const check = core.routeValidator(schemas)
        return function aegisValidate(request, reply, done) {
          const result = check({ query: request.query, params: request.params, body: request.body })
          if (!result.ok) {
            core.countRejection(result.rejection)
            void send(reply, result.rejection)
            return
          }
          if (schemas.query !== undefined) request.query = result.value.query
          if (schemas.params !== undefined) request.params = result.value.params
          if (schemas.body !== undefined) request.body = result.value.body
          if (request.aegis !== undefined) request.aegis.input = result.value
          done()
        }
      },
    }),
  )
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
    core.applyHeaders(reply.raw, state)
    if (state.rejection !== undefined) return void send(reply, state.rejection)
    done()
  }

  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done) => {
    // Fastify builds a fresh object on every read of `routeOptions`: read it once.
    const { url, config } = request.routeOptions
    if (config.aegis === false) return done()
    const admitted = core.admit(request.raw)
    core.track(request.raw, reply.raw)
    if (admitted instanceof Promise)
      admitted.then((state) => {
        try {
          proceed(request, reply, done, state, url)
        } catch (err) {
          done(err as Error)
        }
      }, done)
    else proceed(request, reply, done, admitted, url)
  })

  if (metricsPath !== undefined) {
    app.get(metricsPath, async (_request, reply) => {
      const scraped = await core.scrapeMetrics()
      return reply
        .code(scraped?.status ?? 200)
        .header('cache-control', 'no-store')
        .type(scraped?.contentType ?? 'text/plain')
        .send(scraped?.body ?? '')
    })
  }

  if (core.gateway.routes.length > 0) {
    if (app.initialConfig.http2 === true)
      throw new AegisConfigError([
        { path: 'proxy', message: 'proxy routes on a Fastify server with http2: true are not supported yet' },
      ])
    // In a context of their own: no body parser may read what the gateway streams upstream.
    await app.register((gateway, _options, registered) => {
      gateway.removeAllContentTypeParsers()
      gateway.addContentTypeParser('*', (_request, _payload, done) => done(null))
      for (const route of core.gateway.routes) {
        const handler = (request: FastifyRequest, reply: FastifyReply): Promise<void> | undefined => {
          const forwarded = route.handle(request.raw, reply.raw, request.raw.url ?? '/')
          if (forwarded === false) return void reply.callNotFound()
          void reply.hijack()
          return forwarded
        }
        const { prefix } = route.config
        gateway.all(prefix === '/' ? '/*' : `${prefix}/*`, handler)
        if (prefix !== '/') gateway.all(prefix, handler)
      }
      registered()
    })
  }

  // Timeout warnings and CONNECT refusal; Fastify drains its own server on close.
  core.attach(app.server, { drain: false })

  // Fastify closes its server before any onClose hook runs, and that close waits for upgraded sockets
  // (proxied WebSockets) it cannot end itself: they are ended at closeTimeout, as attached servers' are.
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
