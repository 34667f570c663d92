/**
 * The shape of the simulated site, shared by the traffic generator (which must
 * know what exists, which password is right, which item is private) and the
 * target app (which answers accordingly). One place, so the two never drift.
 */

/** `/page/0` … `/page/${PAGES - 1}` exist; any other number is a 404. */
export const PAGES = 1000

/** `/api/items/0` … `/api/items/${ITEMS - 1}` exist; any other id is a 404. */
export const ITEMS = 5000

/**
 * Whether an existing item is private (answered 403). One in 50, on a fixed
 * residue, so an enumerator walking ids meets a 403 every 50 steps and a human
 * following a link rarely does.
 *
 * @example
 * isPrivateItem(7) // true
 */
export const isPrivateItem = (id) => id % 50 === 7

/**
 * What `GET /api/items/:id` answers for `raw` (the path segment as sent).
 *
 * @example
 * itemStatus('12') // 200
 * itemStatus('7') // 403
 * itemStatus('5000') // 404
 */
export function itemStatus(raw) {
  if (!/^\d{1,9}$/.test(raw)) return 404
  const id = Number(raw)
  if (id >= ITEMS) return 404
  return isPrivateItem(id) ? 403 : 200
}

/**
 * What `GET /page/:n` answers for `raw`.
 *
 * @example
 * pageStatus('3') // 200
 * pageStatus('3x') // 404
 */
export function pageStatus(raw) {
  return /^\d{1,9}$/.test(raw) && Number(raw) < PAGES ? 200 : 404
}

/**
 * The right password of `user`. A rule rather than a table: the generator
 * decides who types it right, the app checks it, neither stores accounts.
 *
 * @example
 * passwordFor('ada@example.com') // 'pw:ada@example.com'
 */
export const passwordFor = (user) => `pw:${user}`

/** The assets every page links (a first visit fetches them; a browser then has them cached). */
export const COMMON_ASSETS = [
  '/static/app.css',
  '/static/vendor.css',
  '/static/app.js',
  '/static/vendor.js',
  '/static/runtime.js',
  '/static/logo.png',
  '/static/sprite.png',
  '/static/fonts/inter-400.woff2',
  '/static/fonts/inter-600.woff2',
  '/static/icons/menu.png',
  '/static/icons/search.png',
  '/static/icons/user.png',
]

/**
 * The images of page `n` (`count` of them): a browser fetches them on every
 * first view of that page.
 *
 * @example
 * pageImages(4, 2) // ['/static/img/4-0.png', '/static/img/4-1.png']
 */
export const pageImages = (n, count) => Array.from({ length: count }, (_, k) => `/static/img/${n}-${k}.png`)

/** The content type of an asset path, by its extension. */
export function assetType(path) {
  if (path.endsWith('.css')) return 'text/css; charset=utf-8'
  if (path.endsWith('.js')) return 'text/javascript; charset=utf-8'
  if (path.endsWith('.png')) return 'image/png'
  if (path.endsWith('.woff2')) return 'font/woff2'
  return 'application/octet-stream'
}
