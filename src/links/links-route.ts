// POST /links on the media port (with LINK_SIGNING_KEYS): a service asks for a link a browser
// can use for a while, with the same client key and application checks as a download. Body:
// {"path": "/v3/media/<id>"} or {"url": "https://api-eu.nexmo.com/v3/media/<id>"}, optionally
// "ttlSeconds" (LINK_MAX_TTL_SECONDS at most; 300 by default, or the maximum if lower) and
// "application". Answer: 201 {"url", "expiresAt"}.
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.js'
import { errors, ProxyError, sendProblem } from '../errors.js'
import { decidePath, type MediaPaths } from '../relay/media-paths.js'
import { APPLICATION_HEADER, type MediaAccess } from '../relay/media-route.js'
import { UUID } from '../uuid.js'
import { linkUrl, signLink } from './signature.js'

const DEFAULT_TTL_SECONDS = 300

export interface LinksRouteOptions {
  readonly config: Config
  readonly access: MediaAccess
  /** Milliseconds since the epoch. */
  readonly now: () => number
}

async function linksRoute(app: FastifyInstance, options: LinksRouteOptions): Promise<void> {
  const { config, access } = options
  const paths: MediaPaths = { base: config.upstreamBaseUrl, hosts: config.upstreamHosts }
  const [signingKey] = config.linkSigningKeys as [string, ...string[]]

  app.post('/links', (request: FastifyRequest, reply: FastifyReply) => {
    const body = request.body
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return sendProblem(reply, errors.invalidLinkRequest('The body must be a JSON object: {"path", "ttlSeconds"}.'))
    }
    const { path: givenPath, url, ttlSeconds, application } = body as Record<string, unknown>
    if (application !== undefined && (typeof application !== 'string' || !UUID.test(application))) {
      return sendProblem(reply, errors.invalidLinkRequest('"application" must be an application id (a UUID).'))
    }
    // The same checks as a download: the client key, and the application it may use.
    const named = typeof application === 'string' ? application : request.headers[APPLICATION_HEADER]
    const granted = access.forClient(request.headers.authorization, named)
    if (granted instanceof ProxyError) return sendProblem(reply, granted)

    const path = mediaPath(givenPath, url, paths)
    if (path instanceof ProxyError) return sendProblem(reply, path)
    const ttl = ttlSeconds === undefined ? Math.min(DEFAULT_TTL_SECONDS, config.linkMaxTtlSeconds) : ttlSeconds
    if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > config.linkMaxTtlSeconds) {
      return sendProblem(
        reply,
        errors.invalidLinkRequest(`"ttlSeconds" must be a whole number from 1 to ${config.linkMaxTtlSeconds}.`),
      )
    }
    const expires = Math.floor(options.now() / 1000) + ttl
    // The application goes into the link only when the caller named one: else the default serves it.
    const linkApplication = named === undefined ? undefined : granted
    const signature = signLink(signingKey, path, expires, linkApplication)
    const base =
      config.publicBaseUrl ?? `http://${hostForUrl(config.host)}:${(app.server.address() as AddressInfo).port}`
    return reply.code(201).send({
      url: linkUrl(base, path, expires, signature, linkApplication),
      expiresAt: new Date(expires * 1000).toISOString(),
    })
  })
}

/** The proxy path a link is for: a media path as given, or a Vonage URL's host-prefixed path. */
function mediaPath(path: unknown, url: unknown, paths: MediaPaths): string | ProxyError {
  if ((path === undefined) === (url === undefined)) {
    return errors.invalidLinkRequest('Give exactly one of "path" (a media path) and "url" (a Vonage file URL).')
  }
  let candidate: string
  if (typeof path === 'string') {
    candidate = path
  } else if (typeof url === 'string') {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return errors.invalidLinkRequest('"url" is not a URL.')
    }
    if (parsed.protocol !== 'https:' || parsed.port !== '' || parsed.username !== '' || parsed.password !== '') {
      return errors.hostNotAllowed()
    }
    if (parsed.search !== '' || parsed.hash !== '') {
      return errors.invalidLinkRequest('"url" must be a Vonage file URL without a query.')
    }
    candidate = `/${parsed.hostname}${parsed.pathname}`
  } else {
    return errors.invalidLinkRequest('"path" and "url" must be strings.')
  }
  if (!candidate.startsWith('/') || candidate.includes('?') || candidate.includes('#')) {
    return errors.invalidLinkRequest('"path" must be a media path, such as /v3/media/<id>.')
  }
  const decision = decidePath(candidate, paths)
  if (decision.kind === 'host-not-allowed') return errors.hostNotAllowed()
  if (decision.kind !== 'file') {
    return errors.invalidLinkRequest('"path" must be a media path, such as /v3/media/<id> or /v1/files/<id>.')
  }
  return candidate
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

export const linksRoutePlugin = fp(linksRoute, { fastify: '5.x', name: 'links-route' })
