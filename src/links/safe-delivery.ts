// How a media response may be shown by a browser: the headers that keep a file from Vonage
// (whoever sent it) from running as a page, and the CORS answers for CORS_ALLOWED_ORIGINS.
// Pure decisions on header values; the media route sets what they return.

/** `type/subtype` then nothing or parameters: a joined or garbled value is not a media type. */
const MEDIA_TYPE = /^\s*([!#$%&'*+.^_`|~0-9a-z-]+)\/([!#$%&'*+.^_`|~0-9a-z-]+)\s*(?:;|$)/i
const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+/i

/** What a browser may send with a cross-origin media request beyond the CORS-safelisted ones. */
export const CORS_ALLOWED_REQUEST_HEADERS = [
  'Range',
  'If-Range',
  'If-None-Match',
  'If-Modified-Since',
  'Vonage-Application-Id',
] as const

/** What a page's script may read of a cross-origin media response. */
const CORS_EXPOSED_RESPONSE_HEADERS = [
  'Content-Range',
  'Content-Length',
  'Accept-Ranges',
  'ETag',
  'Content-Disposition',
  'Cache-Status',
  'X-Request-Id',
] as const

const PREFLIGHT_MAX_AGE_SECONDS = 600
const ALLOWED_METHODS = ['GET', 'HEAD']
const ALLOWED_HEADER_NAMES = new Set(CORS_ALLOWED_REQUEST_HEADERS.map((name) => name.toLowerCase()))

/**
 * What every response on the media port carries, a problem too: no type sniffing, and a CSP
 * under which even a file a browser does open as a page (a link followed to an HTML "image")
 * runs no script, loads nothing and gets an opaque origin: no cookies, no storage, no DOM access.
 */
export const SAFE_DELIVERY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; sandbox",
}

/**
 * Whether a browser may render this type in place: images (but SVG, or any `+xml`, which can
 * carry script), audio and video. Anything else, a missing type included, is a download.
 */
export function showsInline(contentType: string | undefined): boolean {
  const match = contentType === undefined ? null : MEDIA_TYPE.exec(contentType)
  if (!match) return false
  const type = (match[1] as string).toLowerCase()
  const subtype = (match[2] as string).toLowerCase()
  if (subtype.endsWith('+xml') || subtype.includes('svg')) return false
  return type === 'image' || type === 'audio' || type === 'video'
}

/**
 * The headers every media response carries, whatever its status. `contentDisposition` is
 * Vonage's, as the client would otherwise get it; the result replaces it.
 */
export function safeDeliveryHeaders(
  contentType: string | undefined,
  contentDisposition: string | undefined,
): Record<string, string> {
  const inline = showsInline(contentType)
  const headers: Record<string, string> = {
    ...SAFE_DELIVERY_HEADERS,
    // CORP only governs no-cors loads (<img>, <video> and <audio> without `crossorigin`), and
    // those carry no Origin, so CORS_ALLOWED_ORIGINS cannot be checked on them: `cross-origin`
    // would let every site embed the file. `same-site` keeps a page of the proxy's own site
    // (desk.example.com beside media.example.com) embedding as before; a listed origin on
    // another site embeds with `crossorigin="anonymous"`, a CORS request that CORP does not
    // apply to and that the origin list does check. A download is never embedded: same-origin.
    'cross-origin-resource-policy': inline ? 'same-site' : 'same-origin',
  }
  if (inline) {
    if (contentDisposition !== undefined) headers['content-disposition'] = contentDisposition
  } else {
    headers['content-disposition'] = ['attachment', ...fileNameParameters(contentDisposition ?? '')].join('; ')
  }
  return headers
}

/**
 * The `filename` and `filename*` parameters of a Content-Disposition, each as written (the
 * first of each), so a download keeps the name Vonage gave it. Parsed as RFC 6266's grammar
 * with quoted strings, so a `filename=` inside another parameter's quoted value is not one.
 */
function fileNameParameters(value: string): string[] {
  const kept = new Map<string, string>()
  // The disposition type, or nothing when the value starts with a parameter.
  let rest = value.replace(/^\s*[!#$%&'*+.^_`|~0-9a-z-]+\s*(?=;|$)/i, '')
  while (true) {
    rest = rest.replace(/^[\s;]+/, '')
    const name = TOKEN.exec(rest)?.[0]
    if (name === undefined) break
    rest = rest.slice(name.length).trimStart()
    if (!rest.startsWith('=')) break
    rest = rest.slice(1).trimStart()
    let text: string
    if (rest.startsWith('"')) {
      const quoted = /^"(?:[^"\\]|\\.)*"/.exec(rest)?.[0]
      if (quoted === undefined) break
      text = quoted
    } else {
      text = (/^[^;]*/.exec(rest)?.[0] ?? '').trimEnd()
    }
    rest = rest.slice(text.length).trimStart()
    const key = name.toLowerCase()
    if ((key === 'filename' || key === 'filename*') && !kept.has(key) && text !== '') kept.set(key, `${key}=${text}`)
    if (rest !== '' && !rest.startsWith(';')) break
  }
  return [...kept.values()]
}

/**
 * Headers for an actual (non-preflight) media response. `allowed` holds CORS_ALLOWED_ORIGINS
 * as `scheme://host[:port]`, lower-case, without a trailing slash, as browsers send Origin;
 * the Origin header is compared with it exactly. No credentials are ever allowed: a signed
 * link needs none, and cookies are never forwarded.
 */
export function corsHeaders(origin: string | undefined, allowed: ReadonlySet<string>): Record<string, string> {
  if (allowed.size === 0) return {}
  // The answer depends on Origin whenever there is a list: a cache must not hand one
  // origin's answer to another.
  if (!isAllowedOrigin(origin, allowed)) return { vary: 'Origin' }
  return {
    'access-control-allow-origin': origin,
    vary: 'Origin',
    'access-control-expose-headers': CORS_EXPOSED_RESPONSE_HEADERS.join(', '),
  }
}

/**
 * Headers for a preflight `OPTIONS` on a media path, answered 204 either way: granted only to a
 * listed origin asking for GET or HEAD with headers from CORS_ALLOWED_REQUEST_HEADERS (and the
 * CORS-safelisted ones, which browsers do not list). `Authorization` is not among them: a
 * browser holding a client key is a leaked client key, and a browser is given a signed link.
 */
export function preflightHeaders(
  origin: string | undefined,
  requestedMethod: string | undefined,
  requestedHeaders: string | undefined,
  allowed: ReadonlySet<string>,
): Record<string, string> {
  if (allowed.size === 0) return {}
  const vary = { vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers' }
  const asked = (requestedHeaders ?? '')
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name !== '')
  if (
    !isAllowedOrigin(origin, allowed) ||
    requestedMethod === undefined ||
    !ALLOWED_METHODS.includes(requestedMethod) ||
    !asked.every((name) => ALLOWED_HEADER_NAMES.has(name))
  ) {
    return vary
  }
  return {
    'access-control-allow-origin': origin,
    ...vary,
    'access-control-allow-methods': ALLOWED_METHODS.join(', '),
    'access-control-allow-headers': CORS_ALLOWED_REQUEST_HEADERS.join(', '),
    'access-control-max-age': String(PREFLIGHT_MAX_AGE_SECONDS),
  }
}

/**
 * One entry of CORS_ALLOWED_ORIGINS in the form browsers send, or undefined when it is not an
 * http(s) origin alone (a path, query, user info or wildcard): for config to check once.
 */
export function canonicalOrigin(text: string): string | undefined {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return undefined
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined
  if (url.pathname !== '/' || !/^[a-z][a-z0-9+.-]*:\/\/[^/?#]+\/?$/i.test(text.trim())) return undefined
  // WHATWG URL lets `*` and other symbols through in a host: a wildcard is not an origin.
  if (!/^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.?|\[[0-9a-f:.]+\])$/.test(url.hostname)) return undefined
  return url.origin
}

/** The opaque origin `null` (sandboxed frames, file: pages, some redirects) is never listed. */
function isAllowedOrigin(origin: string | undefined, allowed: ReadonlySet<string>): origin is string {
  return origin !== undefined && origin !== 'null' && allowed.has(origin)
}
