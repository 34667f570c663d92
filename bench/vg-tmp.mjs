import express from 'express'
const app = express()
if (process.argv[2] === 'aegis') {
  const { aegis } = await import('@aegis/express')
  app.use(aegis())
}
app.get('/', (req, res) => res.json({ hello: 'world' }))
const limit = Number(process.argv[3])
let n = 0
const s = app.listen(3996, '127.0.0.1', () => console.log('ready'))
s.on('request', (req, res) =>
  res.on('finish', () => {
    if (++n === limit) setImmediate(() => process.exit(0))
  }),
)
