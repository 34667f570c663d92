// Koa with Aegis: one middleware; security headers survive thrown errors.
import Koa from 'koa'
import { aegis } from '@aegis/koa'

const app = new Koa()
const shield = aegis({ metrics: { path: '/metrics' } })
app.use(shield)
app.use((ctx) => {
  if (ctx.path === '/boom') throw new Error('boom')
  ctx.body = { hello: 'world', you: ctx.state.aegis?.client.ip }
})
const server = app.listen(Number(process.env.PORT ?? 3002), '127.0.0.1', () =>
  console.log(`Koa + Aegis on http://127.0.0.1:${server.address().port} (metrics at /metrics)`),
)
shield.attach(server)
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => void shield.close())
