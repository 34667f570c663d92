/**
 * nginx as a shared cache in front of the cache-tests origin: a reference
 * cache measured here, with the same suite and client, beside the results the
 * suite ships (taken with nginx 1.18). Configured as the suite's own
 * docker/nginx/nginx.conf is — `proxy_cache` with `proxy_cache_revalidate`,
 * nothing else tuned — in a temporary directory, on 127.0.0.1.
 */
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnTracked } from './children.mjs'

const READY_TRIES = 100
const READY_PAUSE_MS = 50
const STOP_GRACE_MS = 3_000

/** `nginx -v`'s answer (it prints to stderr), or undefined without nginx. */
export const nginxVersion = () => spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr?.trim() || undefined

/** A port free on 127.0.0.1 a moment ago (nginx cannot listen on port 0 and tell us). */
const freePort = () =>
  new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })

/** Whether anything answers HTTP at `base` (any status: the origin's 404 will do). */
const answers = (base) =>
  new Promise((resolve) => {
    get(`${base}/`, { agent: false, timeout: 1_000 }, (res) => {
      res.resume()
      resolve(true)
    })
      .on('error', () => resolve(false))
      .on('timeout', function () {
        this.destroy()
      })
  })

/**
 * nginx caching `origin` (`http://127.0.0.1:PORT`); or, without nginx, why not.
 *
 * @returns {Promise<{ base: string, version: string, stop: () => Promise<void> } | { refused: string }>}
 */
export async function startNginxCache(origin) {
  const version = nginxVersion()
  if (version === undefined) return { refused: 'nginx not found (apt-get install nginx-light)' }
  const dir = mkdtempSync(join(tmpdir(), 'aegis-cache-tests-nginx-'))
  // Started as root, nginx' worker runs as another user: it must reach its cache and temp files.
  chmodSync(dir, 0o755)
  const port = await freePort()
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=cache:8m max_size=100m inactive=600m;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass ${origin};
      proxy_cache cache;
      proxy_cache_revalidate on;
    }
  }
}
`,
  )
  const child = spawnTracked('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' })
  const base = `http://127.0.0.1:${port}`
  const stop = () =>
    new Promise((resolve) => {
      const force = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
      const done = () => {
        clearTimeout(force)
        rmSync(dir, { recursive: true, force: true })
        resolve()
      }
      if (child.exitCode !== null || child.signalCode !== null) return done()
      child.once('exit', done)
      child.kill('SIGQUIT') // graceful: finishes what is in flight
    })
  for (let i = 0; i < READY_TRIES; i++) {
    if (await answers(base)) return { base, version, stop }
    await new Promise((resolve) => setTimeout(resolve, READY_PAUSE_MS))
  }
  await stop()
  return { refused: `nginx did not answer on ${base}` }
}
