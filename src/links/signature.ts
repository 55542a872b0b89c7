// Signed links: the signature a service (or POST /links) puts on a media link, and the one
// decision on a request's query string: an ordinary request, a valid link, or a refused one.
//
//   sig = base64url, no padding, of HMAC-SHA256(key, path + "\n" + expires + "\n" + application)
import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto'
import { UUID } from '../uuid.js'

/** The query parameters of a link. Any one of them makes a request a link attempt. */
const LINK_PARAMETERS = ['application', 'expires', 'signature'] as const

/**
 * Unix seconds in decimal, without sign or leading zero, and short enough to be exact as a
 * Number: the text is signed as sent, so one number must have one spelling.
 */
const EXPIRES = /^(?:0|[1-9][0-9]{0,14})$/

/** SHA-256's 32 bytes in base64url without padding: always 43 characters. */
const SIGNATURE = /^[A-Za-z0-9_-]{43}$/

export type LinkCheck =
  /** No link parameter: an ordinary request, for the client key checks to decide. */
  | { readonly kind: 'none' }
  /** `application` is lower-cased, as application ids are everywhere else. */
  | { readonly kind: 'valid'; readonly expires: number; readonly application?: string }
  | { readonly kind: 'invalid'; readonly reason: LinkRefusal }

export type LinkRefusal = 'malformed' | 'expired' | 'too-far' | 'bad-signature'

export interface LinkVerifierOptions {
  /** LINK_SIGNING_KEYS: every one verifies (the first is the one that signs). */
  readonly keys: readonly string[]
  /** LINK_MAX_TTL_SECONDS: how far ahead `expires` may be. */
  readonly maxTtlSeconds: number
  /** The clock, in milliseconds since the epoch. */
  readonly now: () => number
}

/**
 * The signature of a link to `path` (exactly as it will be requested, before any
 * percent-decoding and without the query) that expires at `expires` (unix seconds).
 */
export function signLink(key: string | KeyObject, path: string, expires: number, application?: string): string {
  return createHmac('sha256', key)
    .update(`${path}\n${expires}\n${application ?? ''}`)
    .digest('base64url')
}

/**
 * The link a browser is handed: `{base}{path}?application=…&expires=…&signature=…`, the
 * application only when there is one. A path prefix in the base (a reverse proxy that strips
 * it) is kept; the signed path is the one the proxy itself receives.
 */
export function linkUrl(
  publicBaseUrl: string | URL,
  path: string,
  expires: number,
  signature: string,
  application?: string,
): string {
  const base = String(publicBaseUrl).replace(/\/+$/, '')
  const query = application === undefined ? '' : `application=${encodeURIComponent(application)}&`
  return `${base}${path}?${query}expires=${expires}&signature=${encodeURIComponent(signature)}`
}

export class LinkVerifier {
  readonly #keys: readonly KeyObject[]
  readonly #maxTtlMs: number
  readonly #now: () => number

  constructor(options: LinkVerifierOptions) {
    // Config refuses an empty list; a verifier without keys would refuse every link silently.
    if (options.keys.length === 0) throw new TypeError('LinkVerifier needs at least one key')
    this.#keys = options.keys.map((key) => createSecretKey(Buffer.from(key, 'utf8')))
    this.#maxTtlMs = options.maxTtlSeconds * 1000
    this.#now = options.now
  }

  /**
   * `path` is the request path as sent, without the query; `query` the raw query string
   * without its '?'. The query is parsed as WHATWG URLSearchParams does (so the names this
   * sees are the names any other parser of the same query sees), and other parameters are
   * ignored: the query is never sent upstream.
   */
  verify(path: string, query: string): LinkCheck {
    const found = linkParameters(query)
    if (found === 'none') return { kind: 'none' }
    if (found === 'malformed') return invalid('malformed')
    const { application, expires, signature } = found
    // An empty application would sign exactly as an absent one: one link, one spelling.
    if (
      signature === undefined ||
      expires === undefined ||
      !EXPIRES.test(expires) ||
      !SIGNATURE.test(signature) ||
      (application !== undefined && !UUID.test(application))
    ) {
      return invalid('malformed')
    }
    // The signature first: "expired" and "too-far" then only ever describe a genuine link.
    if (!this.#signedByAnyKey(path, expires, application, signature)) return invalid('bad-signature')
    const expiresAt = Number(expires)
    const now = this.#now()
    if (expiresAt * 1000 <= now) return invalid('expired')
    if (expiresAt * 1000 > now + this.#maxTtlMs) return invalid('too-far')
    return application === undefined
      ? { kind: 'valid', expires: expiresAt }
      : { kind: 'valid', expires: expiresAt, application: application.toLowerCase() }
  }

  /**
   * Compared with every key, each in constant time and with no early exit, so that the time
   * taken says neither how much of a signature was right nor which key (old or new) made it.
   */
  #signedByAnyKey(path: string, expires: string, application: string | undefined, signature: string): boolean {
    const given = Buffer.from(signature, 'latin1')
    let matched = false
    for (const key of this.#keys) {
      // Compared as base64url text, not decoded bytes: 43 characters carry 2 bits more than
      // 32 bytes, and decoding would let 4 spellings of one signature through.
      const expected = Buffer.from(signLink(key, path, Number(expires), application), 'latin1')
      if (timingSafeEqual(given, expected)) matched = true
    }
    return matched
  }
}

type LinkParameters = { [name in (typeof LINK_PARAMETERS)[number]]?: string }

/** The link parameters of a query; any of them twice is malformed. */
function linkParameters(query: string): LinkParameters | 'none' | 'malformed' {
  const found: LinkParameters = {}
  let any = false
  for (const [name, value] of new URLSearchParams(query)) {
    if (!(LINK_PARAMETERS as readonly string[]).includes(name)) continue
    const parameter = name as (typeof LINK_PARAMETERS)[number]
    if (found[parameter] !== undefined) return 'malformed'
    found[parameter] = value
    any = true
  }
  return any ? found : 'none'
}

function invalid(reason: LinkRefusal): LinkCheck {
  return { kind: 'invalid', reason }
}
