// The media routes: GET/HEAD /media/:id and /v3/media/:id. The id, the client's key and the
// in-flight limit are checked before any I/O; then the cached token is taken and the upstream
// response is relayed chunk by chunk from undici's handler to the client's socket, through
// header allowlists both ways (see README, "Why not @fastify/http-proxy").
import { createHash, timingSafeEqual } from 'node:crypto'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './config.js'
import { errors, type ProxyError, problemResponse, sendProblem, toProxyError } from './errors.js'
import { FORWARDED_REQUEST_HEADERS, isPassedBack, responseBasics } from './headers.js'
import type { Token, TokenCache } from './token-cache.js'
import type { Exchange, ResponseSink, UpstreamClient, UpstreamRequest } from './upstream.js'

export const MEDIA_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const MEDIA_PREFIXES = ['/media', '/v3/media'] as const

/** Bytes a client's socket may have queued before the upstream is paused. */
const RELAY_BUFFER_BYTES = 64 * 1024
/** Queued for a client that is not reading, when the upstream cannot be paused: then it is cut. */
const UNPAUSED_LIMIT_BYTES = 16 * 1024 * 1024
/**
 * A client that reads nothing for this long while its response waits is cut, as nginx's
 * send_timeout (60 s) does: otherwise it would hold an in-flight slot and an upstream
 * connection for as long as it likes (undici's body timeout does not run while paused).
 */
const DEFAULT_SEND_TIMEOUT_MS = 60_000

const ALLOW = 'GET, HEAD'

export interface MediaRequest extends UpstreamRequest {
  readonly mediaId: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once a media request has passed its checks and counts as in flight. */
    media: MediaRequest | null
  }
}

export interface MediaRouteOptions {
  config: Config
  tokens: TokenCache
  upstream: UpstreamClient
  inFlight: InFlightCounter
  /** How long a client may read nothing while its response waits (nginx's send_timeout). */
  sendTimeoutMs?: number
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
    if (this.#count === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve()
  }
  /** Resolves once no media request is in flight (its log line and metrics written). */
  whenIdle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }
  readonly #idleWaiters: Array<() => void> = []
}

async function mediaRoutes(app: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config, tokens, upstream, inFlight } = options
  const sendTimeoutMs = options.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS
  // An upstream may sit behind a path prefix (an egress gateway); URL keeps '/' for none.
  const upstreamPath = `${config.upstreamBaseUrl.pathname.replace(/\/+$/, '')}/v3/media/`
  const checkClientKey = clientKeyCheck(config.inboundApiKeys)

  app.decorateRequest('media', null)

  /** Checks the id, the client's key and the in-flight limit, in that order, before any I/O. */
  function serveMedia(
    request: FastifyRequest<{ Params: { id: string } }>,
    reply: FastifyReply,
  ): FastifyReply | undefined {
    const mediaId = request.params.id
    if (!MEDIA_ID.test(mediaId)) return sendProblem(reply, errors.invalidMediaId())
    if (!checkClientKey(request.headers.authorization)) return sendProblem(reply, errors.unauthorized())
    if (!inFlight.tryAcquire()) return sendProblem(reply, errors.overloaded())

    // From here the response is written to the socket directly, not through reply.
    reply.hijack()
    const media: MediaRequest = {
      mediaId,
      path: upstreamPath + mediaId,
      method: request.method as 'GET' | 'HEAD',
      headers: forwardedHeaders(request),
      token: undefined as never, // set before the request is sent
      retries: 0,
      upstreamStatus: undefined,
      upstreamMs: undefined,
    }
    request.media = media
    const client = new ClientResponse(request, reply.raw, sendTimeoutMs)
    request.onEnd = (finished) => {
      inFlight.release()
      client.ended(finished)
    }
    // A pipelined request waits for the responses ahead of it on its connection: it goes
    // upstream only when its turn comes, or one client could fan out hundreds of requests.
    if (reply.raw.socket) relay(media, client)
    else reply.raw.once('socket', () => relay(media, client))
    return undefined
  }

  /** Takes the cached token (synchronously while it is fresh) and sends the request upstream. */
  function relay(media: MediaRequest, client: ClientResponse): void {
    const send = (token: Token) => {
      if (client.closed) return
      media.token = token
      client.exchange = upstream.send(media, client)
    }
    const token = tokens.current()
    if (token) {
      send(token)
      return
    }
    tokens.get().then(send, (err: unknown) => {
      const problem = toProxyError(err)
      client.request.log.error({ err: problem.code }, 'no usable Vonage token')
      client.fail(problem)
    })
  }

  for (const prefix of MEDIA_PREFIXES) {
    app.route({ method: ['GET', 'HEAD'], url: `${prefix}/:id`, handler: serveMedia })
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

/**
 * Where the upstream response goes: the client's raw response. Write backpressure pauses the
 * upstream socket (undici resumes it on 'drain'); a problem replaces a response never started.
 */
class ClientResponse implements ResponseSink {
  exchange: Exchange | undefined
  #closed = false
  #listening = false
  #sendTimer: NodeJS.Timeout | undefined

  constructor(
    readonly request: FastifyRequest,
    readonly res: ServerResponse,
    readonly sendTimeoutMs: number,
  ) {}

  get closed(): boolean {
    return this.#closed
  }

  start(status: number, rawHeaders: Buffer[]): void {
    const headers: OutgoingHttpHeaders = responseBasics(this.request)
    // A 304 or 204 has no body. RFC 9110 lets a 304 carry the representation's Content-Length,
    // but clients such as undici (Node's fetch) then wait for a body: it is not passed on.
    const bodiless = status === 304 || status === 204
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = (rawHeaders[i] as Buffer).toString('latin1').toLowerCase()
      if (!isPassedBack(name) || (bodiless && name === 'content-length')) continue
      // latin1 both ways: the bytes Vonage sent are the bytes the client gets.
      const value = (rawHeaders[i + 1] as Buffer).toString('latin1')
      const previous = headers[name]
      headers[name] = previous === undefined ? value : `${previous}, ${value}`
    }
    this.res.writeHead(status, headers)
  }

  data(chunk: Buffer): boolean {
    this.request.bytesSent += chunk.length
    const res = this.res
    res.write(chunk)
    // Node's 16 KiB high-water mark is less than one upstream read: pausing at it would stop
    // the upstream socket after almost every chunk.
    if (res.writableLength <= RELAY_BUFFER_BYTES) return true
    // Only a body that cannot be paused (one that ends with the connection) gets this far.
    if (res.writableLength > UNPAUSED_LIMIT_BYTES) {
      this.abort(new Error('client too slow for a body that cannot be paused'))
      this.cancel()
      return true
    }
    if (!this.#listening) {
      this.#listening = true
      res.on('drain', this.#drained)
    }
    this.#sendTimer ??= setTimeout(this.#stalled, this.sendTimeoutMs).unref()
    return false
  }

  readonly #drained = (): void => {
    clearTimeout(this.#sendTimer)
    this.#sendTimer = undefined
    this.exchange?.resume()
  }

  readonly #stalled = (): void => {
    this.#sendTimer = undefined
    this.abort(new Error(`client read nothing for ${this.sendTimeoutMs} ms`))
    this.cancel()
  }

  end(): void {
    this.res.end()
  }

  fail(problem: ProxyError): void {
    if (this.#closed) return
    const request = this.request
    if (problem.code.startsWith('upstream-')) {
      // The error code only (ECONNREFUSED, UND_ERR_CONNECT_TIMEOUT, a TLS verification code…):
      // enough to tell a dead upstream from a refused certificate, and never a header.
      const cause = (problem.cause as { code?: unknown } | undefined)?.code
      request.log.warn({ err: problem.code, cause: typeof cause === 'string' ? cause : null }, 'Vonage request failed')
    }
    const res = this.res
    if (res.headersSent) return void res.destroy()
    const { body, headers } = problemResponse(problem, request.id)
    if (request.method !== 'HEAD') request.bytesSent = body.length
    headers['content-length'] = String(body.length)
    res.writeHead(problem.status, { ...responseBasics(request), ...headers })
    res.end(body)
  }

  /** Cuts the response short (the client sees a truncated body, never a clean end). */
  abort(error: Error): void {
    this.request.log.warn({ reason: error.message }, 'media response cut short')
    this.res.destroy()
  }

  cancel(): void {
    this.#closed = true
    clearTimeout(this.#sendTimer)
    this.exchange?.cancel()
  }

  /** The response closed; over before it finished means the client went away (or it was cut). */
  ended(finished: boolean): void {
    clearTimeout(this.#sendTimer)
    if (!finished) this.cancel()
  }
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
