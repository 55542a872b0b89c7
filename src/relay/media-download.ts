// One media download, owned by the route that accepted it: its in-flight slot, its upstream
// exchange and its send timer, taken when its turn on the connection comes and released in one
// place when the request is over. It is the exchange's sink: upstream chunks are written to the
// client's socket as they come, and the upstream is paused while the client is slow.
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { StoredDescription } from '../cache/fill.js'
import { CACHE_MISS, type CacheResult, type CacheSink, type MediaCache } from '../cache/media-cache.js'
import { errors, type ProxyError, problemResponse } from '../errors.js'
import { corsHeaders, safeDeliveryHeaders } from '../links/safe-delivery.js'
import { asciiContentDisposition, PASSED_BACK_RESPONSE_HEADERS, responseBasics } from './headers.js'
import type { InFlightLimit } from './in-flight.js'
import type { MediaOutcome } from './outcome.js'
import { unreadBytes } from './send-progress.js'
import type { RequestResources, ServedRequest } from './served-request.js'
import type { MediaSource, UpstreamClient, UpstreamRequest } from './upstream.js'

/** Bytes a client's socket may have queued before the upstream is paused. */
const RELAY_BUFFER_BYTES = 64 * 1024

export interface DownloadDeps {
  readonly upstream: UpstreamClient
  readonly inFlight: InFlightLimit
  /** How long a client may take nothing from its socket while the upstream waits for it. */
  readonly sendTimeoutMs: number
  /** Bytes a client's socket may have queued before the upstream is paused (64 KiB). */
  readonly relayBufferBytes?: number
  /** CACHE_DIR's cache, when there is one. */
  readonly cache?: MediaCache | undefined
  /** CORS_ALLOWED_ORIGINS. */
  readonly corsAllowedOrigins: ReadonlySet<string>
}

/** What the client asked: a POST stores the file (with a cache). */
export type MediaMethod = 'GET' | 'HEAD' | 'POST'

export class MediaDownload implements CacheSink, RequestResources {
  readonly #request: FastifyRequest
  readonly #res: ServerResponse
  readonly #served: ServedRequest
  readonly #deps: DownloadDeps
  readonly #mediaId: string
  readonly #upstreamRequest: UpstreamRequest
  readonly #method: MediaMethod
  #holdsSlot = false
  #over = false
  #exchange: MediaSource | undefined
  #cacheResult: CacheResult | undefined
  /** When the request came with a signed link: its expiry (unix seconds), for the log. */
  readonly #linkExpires: number | undefined
  #listeningForDrain = false
  #sendTimer: NodeJS.Timeout | undefined
  /** When the client's socket last took a chunk, while the upstream waits for it. */
  #lastProgress = 0
  /** The bytes the client had not read yet at the last check, by the kernel (see send-progress.ts). */
  #lastUnread: number | undefined

  constructor(
    request: FastifyRequest,
    served: ServedRequest,
    res: ServerResponse,
    deps: DownloadDeps,
    mediaId: string,
    upstreamRequest: UpstreamRequest,
    method: MediaMethod,
    linkExpires: number | undefined,
  ) {
    this.#request = request
    this.#method = method
    this.#linkExpires = linkExpires
    this.#res = res
    this.#served = served
    this.#deps = deps
    this.#mediaId = mediaId
    this.#upstreamRequest = upstreamRequest
    this.#served.attach(this)
  }

  /** Its turn on the connection has come: take a slot and go upstream, or answer 503. */
  begin(): void {
    if (this.#over) return
    if (!this.#deps.inFlight.tryAcquire()) {
      this.fail(errors.overloaded())
      return
    }
    this.#holdsSlot = true
    const cache = this.#deps.cache
    if (cache === undefined) {
      this.#exchange = this.#deps.upstream.send(this.#upstreamRequest, this)
      return
    }
    const { source, result } = cache.open(this.#upstreamRequest, this.#method, this)
    this.#exchange = source
    this.#cacheResult = result
  }

  release(finished: boolean): MediaOutcome {
    this.#over = true
    clearTimeout(this.#sendTimer)
    if (!finished) this.#exchange?.cancel()
    if (this.#holdsSlot) {
      this.#holdsSlot = false
      this.#deps.inFlight.release()
    }
    const summary = this.#exchange?.summary
    return {
      mediaId: this.#mediaId,
      upstreamHost: this.#upstreamRequest.host,
      application: this.#upstreamRequest.applicationId,
      retries: summary?.retries ?? 0,
      upstreamStatus: summary?.upstreamStatus ?? null,
      upstreamMs: summary?.upstreamMs ?? null,
      cache: this.#cacheResult ?? null,
      linkExpires: this.#linkExpires ?? null,
    }
  }

  start(status: number, upstreamHeaders: IncomingHttpHeaders, cacheStatus?: string): boolean {
    const headers: OutgoingHttpHeaders = this.#basics()
    if (this.#deps.cache) headers['cache-status'] = cacheStatus ?? CACHE_MISS
    // A 304 or 204 has no body. RFC 9110 lets a 304 carry the representation's Content-Length,
    // but clients such as undici (Node's fetch) then wait for a body: it is not passed on.
    const bodiless = status === 304 || status === 204
    for (const name of PASSED_BACK_RESPONSE_HEADERS) {
      // A header Vonage repeats comes as an array, whatever the type says.
      const value = upstreamHeaders[name] as string | string[] | undefined
      if (value === undefined || (bodiless && name === 'content-length')) continue
      // latin1 both ways (undici decodes them so, Node encodes them so): the bytes Vonage sent
      // are the bytes the client gets, but for a file name Node cannot send as it is.
      const joined = typeof value === 'string' ? value : value.join(', ')
      headers[name] = name === 'content-disposition' ? asciiContentDisposition(joined) : joined
    }
    // A customer's file is untrusted content: only images, audio and video may show inline.
    Object.assign(
      headers,
      safeDeliveryHeaders(
        headers['content-type'] as string | undefined,
        headers['content-disposition'] as string | undefined,
      ),
    )
    try {
      this.#res.writeHead(status, headers)
    } catch (err) {
      // A header Node refuses to send: answer 502, rather than cut a response not yet begun.
      this.fail(errors.upstreamUnavailable(err))
      return false
    }
    return true
  }

  data(chunk: Buffer): boolean {
    const res = this.#res
    const served = this.#served
    const length = chunk.length
    served.wrote(length)
    res.write(chunk, (err) => {
      if (err) return
      served.accepted(length)
      this.#lastProgress = performance.now()
    })
    // Node's 16 KiB high-water mark is less than one upstream read: pausing at it would stop
    // the upstream socket after almost every chunk.
    if (res.writableLength <= (this.#deps.relayBufferBytes ?? RELAY_BUFFER_BYTES)) return true
    if (!this.#listeningForDrain) {
      this.#listeningForDrain = true
      res.on('drain', this.#drained)
    }
    this.#watchClient()
    return false
  }

  end(): void {
    const res = this.#res
    res.end()
    // The last bytes may still wait for a client that has stopped reading: the send timeout
    // must watch them too, or the response (and its slot) would wait forever.
    if (res.writableLength > 0 && !this.#over) this.#watchClient()
  }

  /** What every response to a media request carries: its id, and CORS when origins are listed. */
  #basics(): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = responseBasics(this.#request)
    const allowed = this.#deps.corsAllowedOrigins
    if (allowed.size > 0) Object.assign(headers, corsHeaders(this.#request.headers.origin, allowed))
    return headers
  }

  /** Starts the send timeout, unless it runs already: the upstream now waits for the client. */
  #watchClient(): void {
    if (this.#sendTimer !== undefined) return
    this.#lastProgress = performance.now()
    this.#lastUnread = undefined
    this.#sendTimer = setTimeout(this.#checkProgress, this.#deps.sendTimeoutMs / 2)
  }

  fail(problem: ProxyError): void {
    if (this.#over) return
    const request = this.#request
    if (problem.code.startsWith('upstream-')) {
      // The error code only (ECONNREFUSED, UND_ERR_CONNECT_TIMEOUT, a TLS verification code…):
      // enough to tell a dead upstream from a refused certificate, and never a header.
      const cause = (problem.cause as { code?: unknown } | undefined)?.code
      request.log.warn({ err: problem.code, cause: typeof cause === 'string' ? cause : null }, 'Vonage request failed')
    } else if (problem.code === 'token-unavailable') {
      request.log.error({ err: problem.code }, 'no usable Vonage token')
    }
    const res = this.#res
    if (res.headersSent) {
      res.destroy()
      return
    }
    const { body, headers } = problemResponse(problem, request.id)
    if (this.#deps.cache) headers['cache-status'] = CACHE_MISS
    this.#answer(problem.status, headers, body)
  }

  /** A POST's answer: the file is stored (201), or already was (200). */
  stored(status: 200 | 201, description: StoredDescription, cacheStatus: string): void {
    if (this.#over || this.#res.headersSent) return
    const body = Buffer.from(JSON.stringify(description))
    this.#answer(status, { 'content-type': 'application/json', 'cache-status': cacheStatus }, body)
  }

  #answer(status: number, headers: Record<string, string>, body: Buffer): void {
    const request = this.#request
    if (request.method !== 'HEAD') this.#served.wrote(body.length)
    headers['content-length'] = String(body.length)
    this.#res.writeHead(status, { ...this.#basics(), ...headers })
    this.#res.end(request.method === 'HEAD' ? undefined : body)
  }

  /**
   * Cuts the response short with a TCP reset, not a FIN: a body sent without a length (to an
   * HTTP/1.0 client, say) ends with the connection, and only a reset tells such a client it
   * did not get all of it.
   */
  abort(error: Error): void {
    this.#request.log.warn({ reason: error.message }, 'media response cut short')
    this.#served.cutShort((error as NodeJS.ErrnoException).code ?? error.name)
    const socket = this.#res.socket
    if (socket && !socket.destroyed) socket.resetAndDestroy()
    this.#res.destroy()
  }

  readonly #drained = (): void => {
    clearTimeout(this.#sendTimer)
    this.#sendTimer = undefined
    this.#exchange?.resume()
  }

  /**
   * nginx's send_timeout: the time since the client last took anything (a write completed, or
   * the bytes the client has not read fell), not the time to empty the buffer. A client that is
   * reading, however slowly, is not cut.
   */
  readonly #checkProgress = (): void => {
    const socket = this.#res.socket
    const unread = socket ? unreadBytes(socket) : undefined
    if (unread !== undefined) {
      const previous = this.#lastUnread
      this.#lastUnread = unread
      if (previous !== undefined && unread < previous) this.#lastProgress = performance.now()
    }
    const idle = performance.now() - this.#lastProgress
    const timeout = this.#deps.sendTimeoutMs
    if (idle < timeout) {
      // Checked at least twice a timeout, so that the kernel's count has a point to compare with.
      this.#sendTimer = setTimeout(this.#checkProgress, Math.min(timeout - idle, timeout / 2))
      return
    }
    this.#sendTimer = undefined
    this.abort(new Error(`client took nothing for ${timeout} ms`))
    this.#exchange?.cancel()
  }
}
