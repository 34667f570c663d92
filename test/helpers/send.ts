/** Requests through fetch, read whole: what the conformance tests assert on. */

export interface Answer {
  status: number
  headers: Record<string, string>
  body: string
}

/** One request; its status, fields (lower-case names) and body as text. */
export const send = async (url: string, init?: RequestInit): Promise<Answer> => {
  const r = await fetch(url, init)
  return { status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() }
}

/** `n` requests one after another (order matters to limits and scores), to `url` or to `url(i)`. */
export const sendMany = async (
  n: number,
  url: string | ((i: number) => string),
  init?: RequestInit,
): Promise<Answer[]> => {
  const out: Answer[] = []
  for (let i = 0; i < n; i++) out.push(await send(typeof url === 'string' ? url : url(i), init))
  return out
}
