/**
 * nginx as a shared cache in front of the cache-tests origin: a reference
 * cache measured here, with the same suite and client, beside the results the
 * suite ships (taken with nginx 1.18). Configured as the suite's own
 * docker/nginx/nginx.conf is — `proxy_cache` with `proxy_cache_revalidate`,
 * nothing else tuned — in a temporary directory, on 127.0.0.1 (lib/nginx.mjs).
 */
import { nginxVersion, startNginx } from './nginx.mjs'

/**
 * nginx caching `origin` (`http://127.0.0.1:PORT`); or, without nginx, why not.
 *
 * @returns {Promise<{ base: string, version: string, stop: () => Promise<void> } | { refused: string }>}
 */
export async function startNginxCache(origin) {
  const version = nginxVersion()
  if (version === undefined) return { refused: 'nginx not found (apt-get install nginx-light)' }
  try {
    const { base, stop } = await startNginx({
      name: 'cache-tests',
      http: (dir) => [
        `proxy_cache_path ${dir}/cache levels=1:2 keys_zone=cache:8m max_size=100m inactive=600m;`,
      ],
      server: [
        'location / {',
        `  proxy_pass ${origin};`,
        '  proxy_cache cache;',
        '  proxy_cache_revalidate on;',
        '}',
      ],
    })
    return { base, version, stop }
  } catch (err) {
    return { refused: err.message }
  }
}
