// The media routes: the paths of relay/media-paths.ts, GET and HEAD. The path (its host and id)
// and the client's key are checked on arrival, before any I/O; the in-flight slot is taken when
// the request's turn on its connection comes (a pipelining client cannot hold slots for
// requests it is not reading); then a MediaDownload relays the upstream response.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { ClientKey, Config } from '../config.js'
import type { Applications } from '../credentials/applications.js'
import { errors, ProxyError, sendProblem } from '../errors.js'
import { preflightHeaders } from '../links/safe-delivery.js'
import { type LinkCheck, LinkVerifier } from '../links/signature.js'
import { UUID } from '../uuid.js'
import { FORWARDED_REQUEST_HEADERS } from './headers.js'
import { type DownloadDeps, MediaDownload, type MediaMethod } from './media-download.js'
import { decidePath, type MediaPaths, splitTarget } from './media-paths.js'
import type { ServedRequest } from './served-request.js'

/** Route templates (the metrics' route label); `*` catches anything else under a prefix. */
const MEDIA_ROUTES = ['/media', '/v3/media', '/v1/files', '/:host/v3/media', '/:host/v1/files'] as const
export const MEDIA_ALLOW = 'GET, HEAD'
/** The most of a POST's (ignored) body that is read before it is refused with 413. */
const POST_BODY_LIMIT = 64 * 1024
/** With a cache, a POST stores the file. */
export const MEDIA_ALLOW_WITH_CACHE = 'GET, HEAD, POST'

export interface MediaRouteOptions extends DownloadDeps {
  readonly config: Config
  /** Who may read what (shared with POST /links). */
  readonly access: MediaAccess
  /** Milliseconds since the epoch: a signed link's expiry is checked against it. */
  readonly now: () => number
}

/** The request header that names the application; never forwarded (the allowlist has it not). */
export const APPLICATION_HEADER = 'vonage-application-id'

async function mediaRoutes(app: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config } = options
  const paths: MediaPaths = { base: config.upstreamBaseUrl, hosts: config.upstreamHosts }
  const { access } = options
  const links =
    config.linkSigningKeys.length > 0
      ? new LinkVerifier({ keys: config.linkSigningKeys, maxTtlSeconds: config.linkMaxTtlSeconds, now: options.now })
      : undefined

  function serveMedia(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
    // The path as the client sent it: Fastify's params are percent-decoded.
    const rawUrl = request.raw.url ?? ''
    const decision = decidePath(rawUrl, paths)
    if (decision.kind === 'host-not-allowed') return sendProblem(reply, errors.hostNotAllowed())
    if (decision.kind !== 'file') return sendProblem(reply, errors.invalidMediaId())
    // A signed link stands in for a client key (for reading only: the signature covers no method).
    let link: LinkCheck | undefined
    if (links !== undefined && rawUrl.includes('?')) {
      const { path, query } = splitTarget(rawUrl)
      link = links.verify(path, query ?? '')
      if (link.kind === 'invalid' || (link.kind === 'valid' && request.method === 'POST')) {
        return sendProblem(reply, errors.invalidLink())
      }
    }
    const granted =
      link?.kind === 'valid'
        ? access.forLink(link.application)
        : access.forClient(request.headers.authorization, request.headers[APPLICATION_HEADER])
    if (granted instanceof ProxyError) return sendProblem(reply, granted)

    // From here the response is written to the socket directly, not through reply.
    reply.hijack()
    const { target } = decision
    const download = new MediaDownload(
      request,
      request.served as ServedRequest,
      reply.raw,
      options,
      target.id,
      {
        applicationId: granted,
        origin: target.origin,
        host: target.host,
        path: target.path,
        // A POST stores the file: what it asks of Vonage is a GET.
        method: request.method === 'HEAD' ? 'HEAD' : 'GET',
        headers: forwardedHeaders(request),
        trace: (request.served as ServedRequest).traceParent,
      },
      request.method as MediaMethod,
      link?.kind === 'valid' ? link.expires : undefined,
    )
    // A pipelined request waits for the responses ahead of it on its connection.
    if (reply.raw.socket) download.begin()
    else reply.raw.once('socket', () => download.begin())
    return undefined
  }

  const cors = config.corsAllowedOrigins
  const methods = ['GET', 'HEAD']
  const allow = options.cache ? MEDIA_ALLOW_WITH_CACHE : MEDIA_ALLOW
  // With a cache, POST stores the file; with CORS_ALLOWED_ORIGINS, a preflight is answered (204).
  const answered = [...methods, ...(options.cache ? ['POST'] : []), ...(cors.size > 0 ? ['OPTIONS'] : [])]
  for (const prefix of MEDIA_ROUTES) {
    app.route({ method: methods, url: `${prefix}/:id`, handler: serveMedia })
    // Anything else under the prefix: a bad id (or a foreign host) for GET/HEAD, 405 otherwise.
    app.route({ method: methods, url: `${prefix}/*`, handler: serveMedia })
    if (cors.size > 0) {
      app.route({
        method: 'OPTIONS',
        url: `${prefix}/*`,
        handler: (request, reply) => {
          const headers = request.headers
          reply.headers(
            preflightHeaders(
              headers.origin,
              headers['access-control-request-method'],
              headers['access-control-request-headers'],
              cors,
            ),
          )
          return reply.code(204).send()
        },
      })
    }
    app.route({
      method: app.supportedMethods.filter((method) => !answered.includes(method)),
      url: `${prefix}/*`,
      onRequest: async (_request, reply) => {
        reply.header('allow', allow)
        return sendProblem(reply, errors.methodNotAllowed())
      },
      handler: async () => undefined,
    })
  }
  if (options.cache) {
    // A POST takes no body: whatever a webhook handler's HTTP client sends (an empty form, JSON,
    // nothing) is read, bounded, and ignored, whatever its type.
    await app.register(async (posts) => {
      posts.removeAllContentTypeParsers()
      posts.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: POST_BODY_LIMIT }, (_request, _body, done) =>
        done(null, undefined),
      )
      for (const prefix of MEDIA_ROUTES) {
        posts.route({ method: 'POST', url: `${prefix}/:id`, handler: serveMedia })
        posts.route({ method: 'POST', url: `${prefix}/*`, handler: serveMedia })
      }
    })
  }
}

/** The allowlisted client headers and the request id, as undici's name, value pairs. */
function forwardedHeaders(request: FastifyRequest): string[] {
  const incoming = request.headers
  const headers = ['x-request-id', request.id]
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming[name]
    if (typeof value === 'string') headers.push(name, value)
  }
  return headers
}

/** What a client key may use: every application, or those listed. */
const ALL_APPLICATIONS = Symbol('all applications')
type Scope = typeof ALL_APPLICATIONS | ReadonlySet<string>

/**
 * Who may read what: a client key (and the applications it may use), or a signed link (its
 * application, or the default). Shared by the downloads and POST /links.
 */
export class MediaAccess {
  readonly #defaultApplication: string | undefined
  readonly #applications: Applications
  readonly #checkClientKey: (authorization: string | undefined) => Scope | undefined

  constructor(config: Config, applications: Applications) {
    this.#defaultApplication = config.applicationId
    this.#applications = applications
    this.#checkClientKey = clientKeyCheck(config.inboundApiKeys)
  }

  /** The application a client may use, or the problem to answer: 401, 400 or 403. */
  forClient(authorization: string | undefined, named: string | string[] | undefined): string | ProxyError {
    const scope = this.#checkClientKey(authorization)
    if (scope === undefined) return errors.unauthorized()
    const application = this.#application(named)
    if (application instanceof ProxyError) return application
    if (scope !== ALL_APPLICATIONS && !scope.has(application)) return errors.applicationForbidden()
    return application
  }

  /** A valid link's application (lower case already), or the default. */
  forLink(application: string | undefined): string | ProxyError {
    return this.#application(application)
  }

  #application(named: string | string[] | undefined): string | ProxyError {
    let application: string
    if (named === undefined) {
      if (this.#defaultApplication === undefined) return errors.applicationRequired()
      application = this.#defaultApplication
    } else {
      application = typeof named === 'string' ? named.trim().toLowerCase() : ''
    }
    // The default too: its key may have been removed from the directory.
    if (!UUID.test(application) || !this.#applications.has(application)) return errors.unknownApplication()
    return application
  }
}

/**
 * The scope of the key presented, or undefined when it is missing or wrong. Compares in constant
 * time against every key, so timing tells nothing about which matched.
 */
function clientKeyCheck(keys: readonly ClientKey[]): (authorization: string | undefined) => Scope | undefined {
  if (keys.length === 0) return () => ALL_APPLICATIONS
  const digests = keys.map(({ key, applications }) => ({
    digest: createHash('sha256').update(key).digest(),
    scope: (applications ?? ALL_APPLICATIONS) as Scope,
  }))
  return (authorization) => {
    const match = /^Bearer ([\x21-\x7e]+)$/i.exec(authorization ?? '')
    const presented = createHash('sha256')
      .update(match?.[1] ?? '')
      .digest()
    let scope: Scope | undefined
    for (const { digest, scope: keyScope } of digests) {
      if (timingSafeEqual(digest, presented) && scope === undefined) scope = keyScope
    }
    return match === null ? undefined : scope
  }
}

export const mediaRoute = fp(mediaRoutes, { fastify: '5.x', name: 'media-route' })
