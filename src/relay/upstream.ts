// The upstream client: one undici Agent (TLS verified, our timeouts, no pipelining), driven
// through undici's dispatch() handler interface so that body chunks go from the upstream socket
// to the client's without a stream in between. Per media request, an Exchange takes the cached
// token, sends the attempts one after another, and carries out what retry-policy.ts decides
// about each; it never decides anything itself.
import type { IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { rootCertificates } from 'node:tls'
import { Agent, buildConnector, type Dispatcher } from 'undici'
import type { Config } from '../config.js'
import type { Token, TokenCache } from '../credentials/token-cache.js'
import { type ProxyError, toProxyError } from '../errors.js'
import type { AttemptSpan, RequestSpan } from '../observability/tracing.js'
import { skipUnsolicitedContinue } from './interim-continue.js'
import { type AttemptResult, DEFAULT_RETRY_POLICY, decide, type RetryPolicy, type RetryReason } from './retry-policy.js'
import { respondingSocket } from './upstream-sockets.js'

export interface UpstreamClientOptions {
  retry?: RetryPolicy
  /** Extra CA certificates (PEM) to trust besides Node's (and NODE_EXTRA_CA_CERTS'), for tests. */
  ca?: string
  onRetry?: (reason: RetryReason) => void
  /** Send each attempt's W3C traceparent upstream (UPSTREAM_TRACE_PROPAGATION). */
  propagateTrace?: boolean
  /** Upstream status and time to headers, per upstream response (retried ones included). */
  onResponse?: (status: number, seconds: number, host: string) => void
}

/** The client side of one media request: where the upstream response goes. */
export interface ResponseSink {
  /**
   * The response that will be relayed (not a retried one); header values are latin1, as sent.
   * False: it could not be started, and the sink has answered with a problem instead.
   * cacheStatus, when the cache answers or stores it: the response's Cache-Status.
   */
  start(status: number, headers: IncomingHttpHeaders, cacheStatus?: string): boolean
  /** A body chunk; false asks for a pause until Exchange.resume() is called. */
  data(chunk: Buffer): boolean
  end(): void
  /** Nothing was relayed and nothing will be: answer with this problem. */
  fail(problem: ProxyError): void
  /** The upstream body broke after start(): the client's response must be cut, not ended. */
  abort(error: Error): void
}

/** Where a media response's body comes from (an upstream exchange, or a file): what its sink may ask of it. */
export interface MediaSource {
  /** The sink can take more: a paused body goes on. */
  resume(): void
  /** The client went away: stop, and tell the sink nothing more. */
  cancel(): void
  readonly summary: ExchangeSummary
}

/** The summary of a response that asked nothing of the upstream. */
export const NO_UPSTREAM: ExchangeSummary = { retries: 0, upstreamStatus: null, upstreamMs: null }

/** What one media request asks of the upstream. */
export interface UpstreamRequest {
  /** Whose token the request carries. */
  readonly applicationId: string
  /** scheme://host[:port] of the upstream. */
  readonly origin: string
  /** Its host name, for metrics and logs. */
  readonly host: string
  /** Path on the upstream origin, e.g. /v3/media/<id>. */
  readonly path: string
  readonly method: 'GET' | 'HEAD'
  /** Headers to forward (already allowlisted), as name, value pairs; the token is added here. */
  readonly headers: readonly string[]
  /** The request's server span: each attempt is a child of it. */
  readonly trace?: RequestSpan | undefined
}

/** What an exchange came to, for the access log. */
export interface ExchangeSummary {
  readonly retries: number
  /** Status of the last upstream response, null when none arrived. */
  readonly upstreamStatus: number | null
  /** Time to that response's headers. */
  readonly upstreamMs: number | null
}

/** What every exchange shares: built once by the client. */
interface ExchangeContext {
  readonly agent: Agent
  readonly tokens: TokenCache
  readonly policy: RetryPolicy
  readonly events: UpstreamClientOptions
}

const CLIENT_WENT_AWAY = 'client went away'

export class UpstreamClient {
  readonly #context: ExchangeContext

  constructor(config: Config, tokens: TokenCache, options: UpstreamClientOptions = {}) {
    const agent = new Agent({
      connect: connector(config, options.ca),
      headersTimeout: config.upstreamHeadersTimeoutMs,
      bodyTimeout: config.upstreamBodyTimeoutMs,
      // A slow media stream must not hold up the requests queued behind it.
      pipelining: 1,
    })
    this.#context = {
      agent,
      tokens,
      policy: options.retry ?? DEFAULT_RETRY_POLICY,
      events: options,
    }
  }

  /**
   * Sends the request (with retries) and relays the response into the sink. The exchange is
   * cancelled when the client goes away, and resumed when the client's socket drains.
   */
  send(request: UpstreamRequest, sink: ResponseSink): Exchange {
    const exchange = new Exchange(this.#context, request, sink)
    exchange.attempt()
    return exchange
  }

  async close(): Promise<void> {
    await this.#context.agent.destroy()
  }
}

/**
 * One media request's upstream side, across its attempts. It is undici's handler for each
 * attempt in turn; callbacks of an attempt it has given up on (a dropped 503, say) are told
 * apart by their controller and ignored.
 */
export class Exchange implements Dispatcher.DispatchHandler, MediaSource {
  readonly #context: ExchangeContext
  readonly #request: UpstreamRequest
  readonly #sink: ResponseSink
  /** Retries after connection failures and 502/503/504. */
  #backoffs = 0
  /** Whether the one 401 refresh has been used. */
  #refreshed = false
  #cancelled = false
  /** The controller of the attempt under way; undefined between attempts. */
  #controller: Dispatcher.DispatchController | undefined
  /** This attempt's response is being relayed. */
  #relaying = false
  #status = 0
  /** Content-Length bytes still to come of the relayed body (Infinity when it has none). */
  #bodyLeft = Number.POSITIVE_INFINITY
  /** For a body that only the connection's close ends: its socket, to tell a FIN from a reset. */
  #closeDelimitedSocket: Socket | undefined
  #started = 0
  #token: Token | undefined
  #upstreamStatus: number | null = null
  #upstreamMs: number | null = null
  #backoffTimer: NodeJS.Timeout | undefined
  /** The trace span of the attempt under way. */
  #attempt: AttemptSpan | undefined

  constructor(context: ExchangeContext, request: UpstreamRequest, sink: ResponseSink) {
    this.#context = context
    this.#request = request
    this.#sink = sink
  }

  get summary(): ExchangeSummary {
    return {
      retries: this.#backoffs + (this.#refreshed ? 1 : 0),
      upstreamStatus: this.#upstreamStatus,
      upstreamMs: this.#upstreamMs,
    }
  }

  /** Sends the next attempt with the cached token: synchronously while it is fresh. */
  attempt(): void {
    const tokens = this.#context.tokens
    const applicationId = this.#request.applicationId
    const token = tokens.current(applicationId)
    if (token) {
      this.#dispatch(token)
      return
    }
    tokens.get(applicationId).then(
      (fresh) => this.#dispatch(fresh),
      (err: unknown) => {
        if (!this.#cancelled) this.#sink.fail(toProxyError(err))
      },
    )
  }

  /** The client went away: abort the attempt, or the wait before the next; the sink hears nothing more. */
  cancel(): void {
    if (this.#cancelled) return
    this.#cancelled = true
    this.#endAttempt(this.#relaying ? this.#status : null, undefined, 'client_went_away')
    clearTimeout(this.#backoffTimer)
    this.#controller?.abort(new Error(CLIENT_WENT_AWAY))
  }

  /** For the sink: the client's socket has drained. */
  readonly resume = (): void => {
    this.#controller?.resume()
  }

  #dispatch(token: Token): void {
    if (this.#cancelled) return
    this.#token = token
    this.#relaying = false
    this.#started = performance.now()
    const request = this.#request
    const headers = [...request.headers, 'authorization', `Bearer ${token.value}`]
    const trace = request.trace
    if (trace) {
      const attempt = trace.attempt(request, this.#backoffs + (this.#refreshed ? 1 : 0))
      this.#attempt = attempt
      const traceparent = attempt.traceparent
      if (traceparent !== undefined && this.#context.events.propagateTrace) {
        headers.push('traceparent', traceparent)
        if (attempt.tracestate) headers.push('tracestate', attempt.tracestate)
      }
    }
    this.#context.agent.dispatch({ origin: request.origin, path: request.path, method: request.method, headers }, this)
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#cancelled) controller.abort(new Error(CLIENT_WENT_AWAY))
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    // 1xx (100 Continue, 103 Early Hints): informational, the real response follows.
    if (controller !== this.#controller || this.#cancelled || status < 200) return
    const seconds = (performance.now() - this.#started) / 1000
    this.#upstreamStatus = status
    this.#upstreamMs = seconds * 1000
    this.#context.events.onResponse?.(status, seconds, this.#request.host)
    this.#attempt?.firstByte()
    if (!this.#act({ status })) return
    this.#relaying = true
    this.#status = status
    const length = headers['content-length']
    this.#bodyLeft = typeof length === 'string' ? Number(length) : Number.POSITIVE_INFINITY
    const socket = respondingSocket()
    this.#closeDelimitedSocket = isCloseDelimited(status, headers, this.#request.method) ? socket : undefined
    if (!this.#sink.start(status, headers)) {
      this.#relaying = false
      this.#controller = undefined
      controller.abort(new Error('response could not be relayed'))
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (controller !== this.#controller || !this.#relaying) return
    this.#bodyLeft -= chunk.length
    // Never paused on its last bytes: a keep-alive upstream that closes right after them would
    // then be reported as an error ("other side closed") although the body is complete.
    if (!this.#sink.data(chunk) && this.#bodyLeft > 0) controller.pause()
  }

  onResponseEnd(controller: Dispatcher.DispatchController): void {
    if (controller !== this.#controller || !this.#relaying) return
    this.#controller = undefined
    // undici ends a close-delimited body on a reset as on a FIN: only the socket knows.
    const reset = this.#closeDelimitedSocket?.errored
    this.#endAttempt(this.#status, undefined, reset ? 'ECONNRESET' : undefined)
    if (reset) this.#sink.abort(reset)
    else this.#sink.end()
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    if (controller !== this.#controller || this.#cancelled) return
    this.#controller = undefined
    if (!this.#relaying) {
      this.#act({ errorCode: (error as NodeJS.ErrnoException).code ?? '', cause: error })
      return
    }
    this.#endAttempt(this.#status, undefined, (error as NodeJS.ErrnoException).code ?? error.name)
    // A 304 or 204 never has a body, whatever Content-Length says (RFC 9110 8.6).
    const bodiless = this.#status === 304 || this.#status === 204
    if (bodiless && (error as NodeJS.ErrnoException).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.#sink.end()
    } else {
      this.#sink.abort(error)
    }
  }

  #endAttempt(status: number | null, retryReason?: RetryReason, errorType?: string): void {
    const attempt = this.#attempt
    if (attempt === undefined) return
    this.#attempt = undefined
    attempt.end(status, retryReason, errorType)
  }

  /**
   * Carries out the policy's decision on this attempt's result; true when the response is to
   * be relayed. A response that will not be relayed is dropped at once, connection and all:
   * waiting for its body (a 503 whose body never ends) would hold the client up for nothing.
   */
  #act(result: AttemptResult): boolean {
    const decision = decide(result, { retries: this.#backoffs, refreshed: this.#refreshed }, this.#context.policy)
    if (decision.action === 'relay') return true
    this.#endAttempt(
      'status' in result ? result.status : null,
      decision.action === 'retry' ? decision.reason : decision.action === 'refresh' ? 'unauthorized' : undefined,
      'errorCode' in result ? result.errorCode || 'error' : undefined,
    )
    const controller = this.#controller
    this.#controller = undefined
    controller?.abort(new Error('upstream response dropped'))
    switch (decision.action) {
      case 'fail':
        this.#sink.fail(decision.problem)
        break
      case 'retry':
        this.#backoffs++
        this.#context.events.onRetry?.(decision.reason)
        this.#backoffTimer = setTimeout(() => this.attempt(), decision.delayMs)
        break
      case 'refresh':
        // Once for every request refused with the same token (see TokenCache.invalidate).
        this.#refreshed = true
        this.#context.events.onRetry?.('unauthorized')
        this.#context.tokens.invalidate(this.#token)
        this.attempt()
        break
    }
    return false
  }
}

/**
 * How upstream connections are made: certificates always verified, HTTP/1.1 only (undici 8
 * would offer h2 by default; the relay's backpressure and cut detection are built and tested
 * on HTTP/1.1), and, with UPSTREAM_CONNECT_TO, to that address instead of the named host's,
 * while SNI and the certificate check still use the named host (curl's --connect-to).
 */
function connector(config: Config, ca: string | undefined): buildConnector.connector {
  const connect = buildConnector({
    rejectUnauthorized: true,
    timeout: config.upstreamConnectTimeoutMs,
    allowH2: false,
    ...(ca ? { ca: [...rootCertificates, ca] } : {}),
  })
  const target = config.upstreamConnectTo
  const connected: buildConnector.connector = (options, callback) =>
    connectTo(options, (err, socket) => {
      if (socket)
        skipUnsolicitedContinue(socket as Socket)
        // biome-ignore lint/suspicious/noExplicitAny: undici's callback is overloaded on err
      ;(callback as (...args: any[]) => void)(err, socket)
    })
  const connectTo: buildConnector.connector = (options, callback) => {
    // Plain http (a loopback emulator) goes where it is told; only TLS is redirected.
    if (!target || options.protocol !== 'https:') return connect(options, callback)
    return connect(
      {
        ...options,
        hostname: target.host,
        port: String(target.port),
        servername: options.servername || options.hostname,
      },
      callback,
    )
  }
  return connected
}

/** A body with neither a length nor chunked framing ends when the connection does (RFC 9112 6.3). */
function isCloseDelimited(status: number, headers: IncomingHttpHeaders, method: string): boolean {
  if (method === 'HEAD' || status === 204 || status === 304) return false
  if (headers['content-length'] !== undefined) return false
  const coding = headers['transfer-encoding']
  return typeof coding !== 'string' || !coding.trim().toLowerCase().endsWith('chunked')
}
