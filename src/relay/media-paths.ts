// Which Vonage file a request path names, and where it may be fetched from: a pure decision on
// the path exactly as the client sent it (before any percent-decoding), so that the allowlist
// is checked on the very bytes a client chose, and no request reaches a host off the list or
// any path but /v3/media/<uuid> and /v1/files/<uuid>.
//
//   /media/<id>, /v3/media/<id>       -> {UPSTREAM_BASE_URL}/v3/media/<id>
//   /v1/files/<id>                    -> {UPSTREAM_BASE_URL}/v1/files/<id>
//   /<host>/v3/media/<id>             -> https://<host>/v3/media/<id>, <host> in UPSTREAM_HOSTS
//   /<host>/v1/files/<id>             -> https://<host>/v1/files/<id>
import { UUID } from '../uuid.js'

export interface UpstreamTarget {
  /** scheme://host[:port] */
  readonly origin: string
  /** The host name, as metrics and logs show it. */
  readonly host: string
  readonly path: string
  readonly id: string
}

export type PathDecision =
  | { readonly kind: 'file'; readonly target: UpstreamTarget }
  /** Under a media prefix, but not a single UUID. */
  | { readonly kind: 'bad-id' }
  /** A host-prefixed path whose host is not exactly one of UPSTREAM_HOSTS. */
  | { readonly kind: 'host-not-allowed' }
  /** Not a media path at all. */
  | { readonly kind: 'not-media' }

export interface MediaPaths {
  /** UPSTREAM_BASE_URL: origin and an optional path prefix (an egress gateway). */
  readonly base: URL
  /** Lower-case host names the host-prefixed routes may reach. */
  readonly hosts: ReadonlySet<string>
}

const KINDS = { 'v3/media': '/v3/media/', 'v1/files': '/v1/files/' } as const

/** The path and query string of a request target as sent, the absolute form's authority dropped. */
export function splitTarget(rawUrl: string): { path: string; query: string | undefined } {
  // The absolute form (RFC 9112 3.2.2) names this server: its authority is not a route.
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?]*/i.exec(rawUrl)
  const target = absolute ? rawUrl.slice(absolute[0].length) || '/' : rawUrl
  const query = target.indexOf('?')
  return query === -1
    ? { path: target, query: undefined }
    : { path: target.slice(0, query), query: target.slice(query + 1) }
}

export function decidePath(rawUrl: string, paths: MediaPaths): PathDecision {
  const segments = splitTarget(rawUrl).path.split('/')
  // segments[0] is the empty string before the leading slash.
  const [, first = '', second = '', third = ''] = segments
  const { base } = paths
  // An upstream may sit behind a path prefix (an egress gateway); URL keeps '/' for none.
  const prefix = base.pathname.replace(/\/+$/, '')
  if (first === 'media') return file(base.origin, base.hostname, prefix + KINDS['v3/media'], segments.slice(2))
  const short = KINDS[`${first}/${second}` as keyof typeof KINDS]
  if (short) return file(base.origin, base.hostname, prefix + short, segments.slice(3))
  const long = KINDS[`${second}/${third}` as keyof typeof KINDS]
  if (!long) return { kind: 'not-media' }
  // Exactly a listed name: a port, user info, a trailing dot or percent-encoding never is one.
  const host = first.toLowerCase()
  if (!paths.hosts.has(host)) return { kind: 'host-not-allowed' }
  // A listed name is a plain lower-case DNS name: it needs no URL parsing, per request or at all.
  return file(`https://${host}`, host, long, segments.slice(4))
}

function file(origin: string, host: string, pathPrefix: string, rest: string[]): PathDecision {
  const [id = ''] = rest
  if (rest.length !== 1 || !UUID.test(id)) return { kind: 'bad-id' }
  return { kind: 'file', target: { origin, host, path: pathPrefix + id, id } }
}
