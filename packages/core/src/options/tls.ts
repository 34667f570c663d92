import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { z } from 'zod'

/** A PEM string or buffer (or a list of them), as Node's TLS options take. */
type Pem = string | Buffer | ReadonlyArray<string | Buffer>

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g

const pemShape = z.union([
  z.string(),
  z.instanceof(Buffer),
  z.array(z.union([z.string(), z.instanceof(Buffer)])),
])

const listOf = (pem: Pem): readonly (string | Buffer)[] =>
  typeof pem === 'string' || Buffer.isBuffer(pem) ? [pem] : pem

/**
 * Every certificate in a PEM bundle, parsed; a message when one does not parse.
 * `tls.createSecureContext({ ca })` accepts garbage without a word and the
 * upstream then fails every handshake at run time, so the check is X509's.
 */
function certificates(pem: Pem): X509Certificate[] | string {
  const out: X509Certificate[] = []
  for (const item of listOf(pem)) {
    const blocks = item.toString('latin1').match(PEM_CERTIFICATE)
    if (blocks === null) return 'expected PEM certificates (-----BEGIN CERTIFICATE-----)'
    for (const block of blocks) {
      try {
        out.push(new X509Certificate(block))
      } catch (err) {
        return `a certificate does not parse: ${(err as Error).message}`
      }
    }
  }
  return out.length > 0 ? out : 'expected at least one PEM certificate'
}

function privateKey(pem: Pem): KeyObject | string {
  const items = listOf(pem)
  if (items.length !== 1) return 'expected one PEM private key'
  try {
    return createPrivateKey(items[0] as string | Buffer)
  } catch (err) {
    return `the private key does not parse: ${(err as Error).message}`
  }
}

/** PEM certificates (a CA bundle or a certificate chain), each of which must parse. */
export const pemCertificates = pemShape.superRefine((pem, ctx) => {
  const result = certificates(pem)
  if (typeof result === 'string') ctx.addIssue({ code: 'custom', message: result })
})

/** One PEM private key (unencrypted: there is no passphrase option). */
export const pemPrivateKey = pemShape.superRefine((pem, ctx) => {
  const result = privateKey(pem)
  if (typeof result === 'string') ctx.addIssue({ code: 'custom', message: result })
})

/**
 * Refine a TLS object so `cert` and `key` come together and belong together
 * (the first certificate of the chain is the one the key must match).
 */
export function checkCertificatePair(
  t: { cert?: Pem | undefined; key?: Pem | undefined },
  ctx: z.core.$RefinementCtx,
): void {
  if ((t.cert === undefined) !== (t.key === undefined)) {
    ctx.addIssue({ code: 'custom', message: 'tls.cert and tls.key go together', path: [] })
    return
  }
  if (t.cert === undefined || t.key === undefined) return
  const chain = certificates(t.cert)
  const key = privateKey(t.key)
  if (typeof chain === 'string' || typeof key === 'string') return // reported at their own paths
  if (!(chain[0] as X509Certificate).checkPrivateKey(key))
    ctx.addIssue({
      code: 'custom',
      message: 'tls.key does not match the certificate in tls.cert',
      path: ['key'],
    })
}
