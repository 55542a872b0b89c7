// Loading and checking the Vonage application's private key. jose's importPKCS8 rejects
// PKCS#1 and literal "\n", so node:crypto parses the PEM and jose signs with the KeyObject.
import { createPrivateKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'

const MIN_RSA_BITS = 2048

/** Why a key was refused, phrased so that it can be printed: it never quotes the key. */
export class KeyError extends Error {
  override name = 'KeyError'
}

/** Parses a PEM private key (PKCS#8 or PKCS#1; literal "\n" accepted) and checks it is RSA >= 2048 bits. */
export function parsePrivateKey(pem: string): KeyObject {
  const text = pem.includes('\\n') ? pem.replaceAll('\\n', '\n') : pem
  if (!text.includes('-----BEGIN')) {
    throw new KeyError('is not a PEM private key (no "-----BEGIN" line)')
  }
  let key: KeyObject
  try {
    key = createPrivateKey({ key: text.trim(), format: 'pem' })
  } catch {
    // The crypto error may quote the input: never pass it on.
    throw new KeyError('could not be parsed as a PEM private key (PKCS#8 or PKCS#1)')
  }
  if (key.asymmetricKeyType !== 'rsa') {
    const type = key.asymmetricKeyType?.toUpperCase()
    const named = type === undefined ? 'a non-RSA key' : `${/^[AEFHILMNORSX]/.test(type) ? 'an' : 'a'} ${type} key`
    throw new KeyError(`is ${named}; Vonage needs an RSA key (RS256)`)
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
  if (bits < MIN_RSA_BITS) {
    throw new KeyError(`is a ${bits}-bit RSA key; at least ${MIN_RSA_BITS} bits are required`)
  }
  return key
}

/** Reads and parses the key file; errors name the problem, never the content. */
export function readPrivateKeyFile(path: string): KeyObject {
  let pem: string
  try {
    pem = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'read error'
    throw new KeyError(`cannot be read (${code}: ${path})`)
  }
  return parsePrivateKey(pem)
}
