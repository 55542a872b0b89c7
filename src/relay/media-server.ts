// The media port's server: every request is tracked from arrival to end by a ServedRequest
// (so that refusals are logged as well as downloads), the media routes serve what they
// recognise, and anything else gets a problem+json 404 or 405.
import type { FastifyInstance } from 'fastify'
import Fastify from 'fastify'
import type { Logger } from 'pino'
import { CACHE_MISS } from '../cache/media-cache.js'
import type { Config } from '../config.js'
import type { Applications } from '../credentials/applications.js'
import { errors, sendProblem } from '../errors.js'
import { prepareServer, refuseEarly, serverOptions } from '../http-servers.js'
import { linksRoutePlugin } from '../links/links-route.js'
import { corsHeaders } from '../links/safe-delivery.js'
import type { Tracing } from '../observability/tracing.js'
import { EarlyRefusals } from './client-errors.js'
import { responseBasics } from './headers.js'
import type { DownloadDeps } from './media-download.js'
import { MEDIA_ALLOW, MEDIA_ALLOW_WITH_CACHE, MediaAccess, mediaRoute } from './media-route.js'
import type { Outcome } from './outcome.js'
import { ServedRequest } from './served-request.js'

/** Under the media prefixes: an unknown method there is 405, not 404. */
const MEDIA_PATH = /^\/((v3\/)?media|v1\/files|[^/?]+\/(v3\/media|v1\/files))\//

export interface MediaServerOptions extends Omit<DownloadDeps, 'corsAllowedOrigins'> {
  readonly config: Config
  readonly applications: Applications
  readonly logger: Logger
  readonly isDraining: () => boolean
  /** Milliseconds since the epoch (signed links' expiry). */
  readonly now: () => number
  readonly tracing: Tracing
  /** Each request's outcome, once it is over. */
  readonly onOutcome: (outcome: Outcome) => void
}

export interface MediaServer {
  readonly server: FastifyInstance
  /** Requests that arrived and are not over yet (queued pipelined ones included). */
  readonly openRequests: number
  /** Resolves once no request is open. */
  whenIdle(): Promise<void>
}

export async function createMediaServer(options: MediaServerOptions): Promise<MediaServer> {
  const { config, logger, isDraining } = options
  let open = 0
  const idleWaiters: Array<() => void> = []
  const refusals = new EarlyRefusals((refusal) =>
    options.onOutcome({ ...refusal, route: 'unmatched', seconds: 0, aborted: false, media: null }),
  )
  const server = Fastify(serverOptions(logger, refusals))
  const cors = config.corsAllowedOrigins
  prepareServer(server, refusals)
  server.decorateRequest('served', null)

  const onOutcome = (outcome: Outcome) => {
    open--
    options.onOutcome(outcome)
    if (open === 0) for (const resolve of idleWaiters.splice(0)) resolve()
    // During the drain, a connection whose last response has ended is closed at once, not
    // when the client gets round to it or the grace period runs out.
    if (isDraining()) setImmediate(() => server.server.closeIdleConnections())
  }
  server.addHook('onRequest', (request, reply, done) => {
    open++
    request.served = new ServedRequest(request, reply, options.tracing, onOutcome)
    reply.headers(responseBasics(request))
    // A browser can read a refusal (401, 403) too, not just a download.
    // A preflight's answer is its own (preflightHeaders), granting nothing when it refuses.
    if (cors.size > 0 && request.method !== 'OPTIONS') reply.headers(corsHeaders(request.headers.origin, cors))
    // Every media response says what the cache did: a refusal did not find anything stored.
    if (options.cache && request.routeOptions.url !== undefined && request.routeOptions.url !== '/links') {
      reply.header('cache-status', CACHE_MISS)
    }
    if (!refuseEarly(request, reply, isDraining())) done()
  })

  const access = new MediaAccess(config, options.applications)
  await server.register(mediaRoute, {
    config,
    access,
    now: options.now,
    corsAllowedOrigins: config.corsAllowedOrigins,
    upstream: options.upstream,
    inFlight: options.inFlight,
    sendTimeoutMs: options.sendTimeoutMs,
    relayBufferBytes: options.relayBufferBytes,
    cache: options.cache,
  })
  if (config.linkSigningKeys.length > 0) await server.register(linksRoutePlugin, { config, access, now: options.now })
  server.setNotFoundHandler((request, reply) => {
    // Methods Fastify has no route table for (PROPFIND, …) land here even on media paths.
    if (MEDIA_PATH.test(request.url)) {
      reply.header('allow', options.cache ? MEDIA_ALLOW_WITH_CACHE : MEDIA_ALLOW)
      return sendProblem(reply, errors.methodNotAllowed())
    }
    return sendProblem(reply, errors.notFound())
  })
  server.addHook('onClose', async () => {
    await options.upstream.close()
  })

  return {
    server,
    get openRequests() {
      return open
    },
    whenIdle() {
      if (open === 0) return Promise.resolve()
      const { promise, resolve } = Promise.withResolvers<void>()
      idleWaiters.push(resolve)
      return promise
    },
  }
}
