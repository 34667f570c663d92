import http from 'node:http'
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
const total = Number(process.argv[2])
let done = 0,
  sent = 0
await new Promise((resolve) => {
  const one = () => {
    if (sent >= total) return
    sent++
    http
      .get({ host: '127.0.0.1', port: 3996, path: '/', agent }, (res) => {
        res.resume()
        res.on('end', () => {
          if (++done === total) resolve()
          else one()
        })
      })
      .on('error', () => setTimeout(one, 100))
  }
  for (let i = 0; i < 4; i++) one()
})
agent.destroy()
