// The media routes: the paths of relay/media-paths.ts, GET and HEAD. The path (its host and id)
// and the client's key are checked on arrival, before any I/O; the in-flight slot is taken when
// the request's turn on its connection comes (a pipelining client cannot hold slots for
// requests it is not reading); then a MediaDownload relays the upstream response.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { ClientKey, Config } from '../config.js'
import type { Applications } from '../credentials/applications.js'
import { errors, sendProblem } from '../errors.js'
import { UUID } from '../uuid.js'
import { FORWARDED_REQUEST_HEADERS } from './headers.js'
import { type DownloadDeps, MediaDownload, type MediaMethod } from './media-download.js'
import { decidePath, type MediaPaths } from './media-paths.js'
import type { ServedRequest } from './served-request.js'

/** Route templates (the metrics' route label); `*` catches anything else under a prefix. */
const MEDIA_ROUTES = ['/media', '/v3/media', '/v1/files', '/:host/v3/media', '/:host/v1/files'] as const
export const MEDIA_ALLOW = 'GET, HEAD'
/** With a cache, a POST stores the file. */
export const MEDIA_ALLOW_WITH_CACHE = 'GET, HEAD, POST'

export interface MediaRouteOptions extends DownloadDeps {
  readonly config: Config
  readonly applications: Applications
}

/** The request header that names the application; never forwarded (the allowlist has it not). */
const APPLICATION_HEADER = 'vonage-application-id'

async function mediaRoutes(app: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config, applications } = options
  const defaultApplication = config.applicationId
  const paths: MediaPaths = { base: config.upstreamBaseUrl, hosts: config.upstreamHosts }
  const checkClientKey = clientKeyCheck(config.inboundApiKeys)

  function serveMedia(request: FastifyRequest, reply: FastifyReply): FastifyReply | undefined {
    // The path as the client sent it: Fastify's params are percent-decoded.
    const decision = decidePath(request.raw.url ?? '', paths)
    if (decision.kind === 'host-not-allowed') return sendProblem(reply, errors.hostNotAllowed())
    if (decision.kind !== 'file') return sendProblem(reply, errors.invalidMediaId())
    const clientKey = checkClientKey(request.headers.authorization)
    if (clientKey === undefined) return sendProblem(reply, errors.unauthorized())
    const named = request.headers[APPLICATION_HEADER]
    let applicationId: string | undefined
    if (named === undefined) {
      if (defaultApplication === undefined) return sendProblem(reply, errors.applicationRequired())
      applicationId = defaultApplication
    } else {
      applicationId = typeof named === 'string' ? named.trim().toLowerCase() : ''
    }
    // The default too: its key may have been removed from the directory.
    if (!UUID.test(applicationId) || !applications.has(applicationId)) {
      return sendProblem(reply, errors.unknownApplication())
    }
    if (clientKey !== ALL_APPLICATIONS && !clientKey.has(applicationId)) {
      return sendProblem(reply, errors.applicationForbidden())
    }

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
        applicationId,
        origin: target.origin,
        host: target.host,
        path: target.path,
        // A POST stores the file: what it asks of Vonage is a GET.
        method: request.method === 'HEAD' ? 'HEAD' : 'GET',
        headers: forwardedHeaders(request),
      },
      request.method as MediaMethod,
    )
    // A pipelined request waits for the responses ahead of it on its connection.
    if (reply.raw.socket) download.begin()
    else reply.raw.once('socket', () => download.begin())
    return undefined
  }

  const methods = options.cache ? ['GET', 'HEAD', 'POST'] : ['GET', 'HEAD']
  const allow = options.cache ? MEDIA_ALLOW_WITH_CACHE : MEDIA_ALLOW
  for (const prefix of MEDIA_ROUTES) {
    app.route({ method: methods, url: `${prefix}/:id`, handler: serveMedia })
    // Anything else under the prefix: a bad id (or a foreign host) for GET/HEAD, 405 otherwise.
    app.route({ method: methods, url: `${prefix}/*`, handler: serveMedia })
    app.route({
      method: app.supportedMethods.filter((method) => !methods.includes(method)),
      url: `${prefix}/*`,
      onRequest: async (_request, reply) => {
        reply.header('allow', allow)
        return sendProblem(reply, errors.methodNotAllowed())
      },
      handler: async () => undefined,
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
