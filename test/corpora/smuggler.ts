/**
 * The smuggler Transfer-Encoding mutations (test/corpora/data/smuggler-te-mutations)
 * and the request each is sent in: a POST whose `gadget_hex` header line competes
 * with `Content-Length: 5`, then a pipelined `GET /second`. A chunked reading
 * would take `0\r\n\r\n` as the body's end and leave bytes over.
 */
import { readCorpus } from './support.js'

export interface Gadget {
  config: 'default' | 'doubles' | 'exhaustive'
  name: string
  gadget_hex: string
  node20_20_2: 'rejected-400' | 'accepted-as-CL'
}

export const gadgets = readCorpus('smuggler-te-mutations/mutations.jsonl')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => JSON.parse(l) as Gadget)

/** The bytes of one gadget's request; `tag` marks both requests' targets (`?g=tag`). */
export const wire = (g: Gadget, tag?: number): Buffer => {
  const q = tag === undefined ? '' : `?g=${tag}`
  return Buffer.concat([
    Buffer.from(`POST /upload${q} HTTP/1.1\r\n`, 'latin1'),
    Buffer.from(g.gadget_hex, 'hex'),
    Buffer.from(
      '\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n0\r\n\r\n' +
        `GET /second${q} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      'latin1',
    ),
  ])
}
