// Fastify with Aegis: the plugin, a metrics path, and a route opted out.
import Fastify from 'fastify'
import { aegis } from '@aegis/fastify'

// requestTimeout: Fastify's default is none, which leaves slowloris in; Aegis warns about it.
const app = Fastify({ requestTimeout: 30_000 })
await app.register(aegis, { metrics: { path: '/metrics' } })
app.get('/', (request) => ({ hello: 'world', you: request.aegis?.client.ip }))
app.get('/healthz', { config: { aegis: false } }, () => 'ok')
await app.listen({ port: Number(process.env.PORT ?? 3001), host: '127.0.0.1' })
console.log(`Fastify + Aegis on http://127.0.0.1:${app.server.address().port} (metrics at /metrics)`)
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => void app.close())
