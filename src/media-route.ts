// The media routes: GET/HEAD /media/:id and /v3/media/:id through @fastify/http-proxy. The id,
// the client's key and the in-flight limit are checked before any I/O; then the cached token
// is awaited and reply-from streams the upstream response back through header allowlists.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import httpProxy from '@fastify/http-proxy'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './config.js'
import { errors, ProxyError, sendProblem, toProxyError } from './errors.js'
import { onRequestEnd } from './request-end.js'
import type { TokenCache } from './token-cache.js'
import { EXCHANGE, type UpstreamClient, type UpstreamExchange } from './upstream.js'

export const MEDIA_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const MEDIA_PREFIXES = ['/media', '/v3/media'] as const

/** Client request headers sent on to Vonage; everything else stays here. */
export const FORWARDED_REQUEST_HEADERS = ['range', 'if-range', 'if-none-match', 'if-modified-since', 'accept'] as const
/** Upstream response headers passed back to the client; everything else is dropped. */
export const PASSED_BACK_RESPONSE_HEADERS = [
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'content-disposition',
  'cache-control',
  'retry-after',
] as const

const ALLOW = 'GET, HEAD'

export interface MediaExchange extends UpstreamExchange {
  readonly mediaId: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once a media request has passed its checks and counts as in flight. */
    media: MediaExchange | null
    /** Body bytes written to the client (streamed or problem+json). */
    bytesSent: number
  }
}

export interface MediaRouteOptions {
  config: Config
  tokens: TokenCache
  upstream: UpstreamClient
  inFlight: InFlightCounter
}

/** How many media requests are being served; shared with metrics and shutdown. */
export class InFlightCounter {
  #count = 0
  constructor(readonly limit: number) {}
  get count(): number {
    return this.#count
  }
  tryAcquire(): boolean {
    if (this.#count >= this.limit) return false
    this.#count++
    return true
  }
  release(): void {
    this.#count--
  }
}

async function mediaRoutes(app: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config, tokens, upstream, inFlight } = options
  // An upstream may sit behind a path prefix (an egress gateway); URL keeps '/' for none.
  const basePath = config.upstreamBaseUrl.pathname.replace(/\/+$/, '')
  const checkClientKey = clientKeyCheck(config.inboundApiKeys)

  app.decorateRequest('media', null)
  app.decorateRequest('bytesSent', 0)

  /** Runs before any I/O: id, then the client's key, then the in-flight limit. */
  async function admit(request: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply): Promise<void> {
    const mediaId = request.params.id
    if (!MEDIA_ID.test(mediaId)) return void sendProblem(reply, errors.invalidMediaId())
    if (!checkClientKey(request.headers.authorization)) return void sendProblem(reply, errors.unauthorized())
    if (!inFlight.tryAcquire()) return void sendProblem(reply, errors.overloaded())
    const controller = new AbortController()
    request.media = {
      mediaId,
      signal: controller.signal,
      token: undefined as never, // set by the handler before anything reads it
      retries: 0,
      upstreamStatus: undefined,
      upstreamMs: undefined,
    }
    onRequestEnd(reply, () => {
      inFlight.release()
      // Over before the response finished: the client went away (or the stream failed).
      if (!reply.raw.writableFinished) controller.abort()
    })
  }

  const replyOptions: FastifyReplyFromHooks = {
    queryString: () => '',
    // reply-from's own retries would turn one 503 into 11 requests; UpstreamClient owns retries.
    retryDelay: () => null,
    rewriteRequestHeaders: (request) => requestHeadersFor(request as FastifyRequest) as never,
    rewriteHeaders: (headers, request) => responseHeadersFor(headers, request as FastifyRequest),
    onResponse: (request, reply, res) => {
      const stream = (res as unknown as { stream: NodeJS.ReadableStream }).stream
      stream.on('data', (chunk: Buffer) => {
        request.bytesSent += chunk.length
      })
      reply.send(stream)
    },
    onError: (reply, { error }) => {
      sendProblem(reply as FastifyReply, upstreamProblem(error))
    },
  }

  async function handler(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const media = request.media as MediaExchange
    try {
      media.token = await tokens.get()
    } catch (err) {
      const problem = toProxyError(err)
      request.log.error({ err: problem.code }, 'no usable Vonage token')
      return sendProblem(reply, problem)
    }
    if (media.signal.aborted) return reply
    return reply.from(`${basePath}/v3/media/${media.mediaId}`, replyOptions)
  }

  for (const prefix of MEDIA_PREFIXES) {
    await app.register(httpProxy, {
      upstream: config.upstreamBaseUrl.origin,
      prefix,
      rewritePrefix: `${basePath}/v3/media`,
      routes: ['/:id'],
      httpMethods: ['GET', 'HEAD'],
      undici: upstream as never,
      disableRequestLogging: true,
      preValidation: admit as never,
      handler,
    })
    // Anything else under the prefix: a bad id for GET/HEAD, and 405 for other methods.
    app.route({
      method: ['GET', 'HEAD'],
      url: `${prefix}/*`,
      handler: (_request, reply) => sendProblem(reply, errors.invalidMediaId()),
    })
    app.route({
      method: app.supportedMethods.filter((method) => method !== 'GET' && method !== 'HEAD'),
      url: `${prefix}/*`,
      onRequest: async (_request, reply) => {
        reply.header('allow', ALLOW)
        return sendProblem(reply, errors.methodNotAllowed())
      },
      handler: async () => undefined,
    })
  }
}

function requestHeadersFor(request: FastifyRequest): Record<string | symbol, unknown> {
  const incoming = request.headers
  const headers: Record<string | symbol, unknown> = { 'x-request-id': request.id }
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming[name]
    if (typeof value === 'string') headers[name] = value
  }
  headers[EXCHANGE] = request.media
  return headers
}

function responseHeadersFor(upstreamHeaders: IncomingHttpHeaders, request: FastifyRequest): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { 'x-request-id': request.id }
  for (const name of PASSED_BACK_RESPONSE_HEADERS) {
    const value = upstreamHeaders[name]
    if (value !== undefined) headers[name] = value
  }
  return headers
}

/** reply-from wraps what UpstreamClient throws; find the cause and map it to 502 or 504. */
function upstreamProblem(error: Error): ProxyError {
  let cause: unknown = error
  while (cause instanceof Error && !(cause instanceof ProxyError) && cause.cause) cause = cause.cause
  if (cause instanceof ProxyError) return cause
  const code = (cause as { code?: string }).code
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return errors.upstreamTimeout(cause)
  return errors.upstreamUnavailable(cause)
}

/** Compares in constant time against every key, so timing tells nothing about which matched. */
function clientKeyCheck(keys: string[]): (authorization: string | undefined) => boolean {
  if (keys.length === 0) return () => true
  const digests = keys.map((key) => createHash('sha256').update(key).digest())
  return (authorization) => {
    const match = /^Bearer ([\x21-\x7e]+)$/i.exec(authorization ?? '')
    const presented = createHash('sha256')
      .update(match?.[1] ?? '')
      .digest()
    let ok = false
    for (const digest of digests) ok = timingSafeEqual(digest, presented) || ok
    return ok && match !== null
  }
}

export const mediaRoute = fp(mediaRoutes, { fastify: '5.x', name: 'media-route' })
