// The demo: an Express app behind aegis() with defaults — memory only, no
// Redis, nothing to configure. `pnpm demo` builds the packages and runs this.
import express from 'express'
import { z } from 'zod'
import { aegis } from '@aegis/express'

const port = Number(process.env.PORT ?? 3000)
const app = express()
const shield = aegis({
  accessLog: true,
  serverTiming: true,
  logger: consoleLogger(),
  // On top of the default 1,000 requests a minute per client: 5 login attempts a
  // minute; the 6th is answered 429 and bans the client from /login for 60 s.
  limiter: { routes: { 'POST /login': { points: 5, duration: 60, blockDuration: 60 } } },
})

app.use(shield)
app.get('/', (req, res) => res.json({ hello: 'world', you: req.aegis?.client.ip }))
app.get('/users/:id', (req, res) => res.json({ id: req.params.id }))
app.post(
  '/people',
  // A body parser limit above Aegis' 1 MiB, so the demo's 413 comes from Aegis. The
  // demo's 413 line sends a JSON content type: curl's --data-binary alone sends a form
  // type, which express.json() skips, and the zod check would answer 400 first.
  express.json({ limit: '10mb' }),
  shield.validate({
    body: z.strictObject({ name: z.string().min(1), age: z.coerce.number().int().optional() }),
  }),
  (req, res) => res.status(201).json(req.body),
)
app.post('/login', express.json(), (req, res) => {
  const { user, password } = req.body ?? {}
  if (user !== 'ada' || password !== 'lovelace') return res.status(401).json({ error: 'invalid credentials' })
  res.json({ user })
})
app.get('/metrics', shield.metrics)

const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${port}`
  console.log(`Aegis demo on ${base} — try:
  curl -i ${base}/                                    normal request, security headers
  curl -i ${base}/users/42                            route template /users/:id in metrics
  curl -i -X TRACE ${base}/                           405 problem+json with Allow
  curl -i --path-as-is ${base}/static/..%2f..%2fetc/passwd   400 path traversal
  curl -i -H 'content-type: application/json' -d '{"name":""}' ${base}/people      400 with zod issues
  curl -i -H 'content-type: application/json' -d '{"name":"Ada","age":"36"}' ${base}/people   201
  head -c 2000000 /dev/zero | curl -i -H 'content-type: application/json' -H 'transfer-encoding: chunked' --data-binary @- ${base}/people   413 (counted while it streams)
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' -H 'content-type: application/json' -d '{"user":"ada","password":"guess"}' ${base}/login; done; echo   # 401 x5, then 429
  curl -i -X POST ${base}/login                       429 while banned: Retry-After, RateLimit fields, violated-policies
  curl -s ${base}/metrics                             Prometheus text
Ctrl-C stops it (graceful close).`)
})
shield.attach(server)

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    void shield.close().then(() => process.exit(0))
  })
}

function consoleLogger() {
  const line = (level) => (obj, msg) => console.log(JSON.stringify({ level, msg, ...obj }))
  return { info: line('info'), warn: line('warn'), error: line('error') }
}
