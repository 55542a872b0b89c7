// The upstream client: one undici Agent (TLS verified, our timeouts, no pipelining) and the
// retry policy, driven through undici's dispatch() handler interface, so that body chunks go
// from the upstream socket to the client's without a stream in between. Before the response
// reaches the client, this is where the token is injected, connection failures and
// 502/503/504 are retried with jittered backoff, and a 401 gets one fresh token.
import { Agent, type Dispatcher } from 'undici'
import type { Config } from './config.js'
import { errors, type ProxyError } from './errors.js'
import type { Token, TokenCache } from './token-cache.js'

export type RetryReason = 'connect_error' | 'reset' | 'status_502' | 'status_503' | 'status_504' | 'unauthorized'

export interface RetryPolicy {
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1_000 }

export interface UpstreamClientOptions {
  retry?: RetryPolicy
  onRetry?: (reason: RetryReason) => void
  /** Upstream status and time to headers, per upstream response (retried ones included). */
  onResponse?: (status: number, seconds: number) => void
}

/** The client side of one media request: where the upstream response goes. */
export interface ResponseSink {
  /** The response that will be relayed (not a retried one). Raw undici headers: name, value, … */
  start(status: number, rawHeaders: Buffer[]): void
  /** A body chunk; false asks for a pause until resume() is called. */
  data(chunk: Buffer): boolean
  end(): void
  /** Nothing was relayed and nothing will be: answer with this problem. */
  fail(problem: ProxyError): void
  /** The upstream body broke after start(): the client's response must be cut, not ended. */
  abort(error: Error): void
}

/** What one media request asks of the upstream, and what the access log learns from it. */
export interface UpstreamRequest {
  /** Path on the upstream origin, e.g. /v3/media/<id>. */
  readonly path: string
  readonly method: 'GET' | 'HEAD'
  /** Headers to forward (already allowlisted), as name, value pairs; the token is added here. */
  readonly headers: string[]
  /** The token of the latest attempt. */
  token: Token
  retries: number
  upstreamStatus: number | undefined
  upstreamMs: number | undefined
}

const RETRYABLE_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
])
const RETRYABLE_STATUSES: Record<number, RetryReason> = { 502: 'status_502', 503: 'status_503', 504: 'status_504' }

/**
 * What is left of a relayed body, for deciding when it may be paused: the Content-Length bytes
 * still to come, 'chunked' (ends with its last chunk), or 'unpausable'.
 *
 * undici 7 throws an uncatchable AssertionError, which ends the process, when a paused
 * response's connection ends and the response was not keep-alive (nodejs/undici#5360; fixed
 * only in undici 8, which needs Node 22). A keep-alive response is safe: its connection ending
 * is an ordinary error. So a response sent with Connection: close, or whose body only the close
 * can end, is never paused; nor is any body on its last bytes, which a close may follow at once.
 */
type BodyLeft = number | 'chunked' | 'unpausable'

function bodyFraming(rawHeaders: Buffer[]): BodyLeft {
  let length: number | undefined
  let chunked = false
  let coded = false
  let closes = false
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as Buffer).toString('latin1').toLowerCase()
    if (name !== 'content-length' && name !== 'transfer-encoding' && name !== 'connection') continue
    const value = (rawHeaders[i + 1] as Buffer).toString('latin1').trim().toLowerCase()
    if (name === 'content-length') length = Number(value)
    else if (name === 'connection') closes ||= /(^|,)\s*close\s*(,|$)/.test(value)
    else {
      // Chunked only if it is the final coding (RFC 9112 6.3); otherwise the close ends it.
      coded = true
      chunked = value.endsWith('chunked')
    }
  }
  if (closes || (coded && !chunked) || (!coded && length === undefined)) return 'unpausable'
  return chunked ? 'chunked' : (length as number)
}

/** What every exchange shares: built once by the client. */
interface ExchangeContext {
  readonly agent: Agent
  readonly origin: string
  readonly tokens: TokenCache
  readonly policy: RetryPolicy
  readonly events: UpstreamClientOptions
}

export class UpstreamClient {
  readonly #context: ExchangeContext

  constructor(config: Config, tokens: TokenCache, options: UpstreamClientOptions = {}) {
    const agent = new Agent({
      // Certificates are always checked (reply-from's own agent turns this off).
      connect: { rejectUnauthorized: true, timeout: config.upstreamConnectTimeoutMs },
      headersTimeout: config.upstreamHeadersTimeoutMs,
      bodyTimeout: config.upstreamBodyTimeoutMs,
      // A slow media stream must not hold up the requests queued behind it.
      pipelining: 1,
    })
    this.#context = {
      agent,
      origin: config.upstreamBaseUrl.origin,
      tokens,
      policy: options.retry ?? DEFAULT_RETRY_POLICY,
      events: options,
    }
  }

  /**
   * Sends the request (with retries) and relays the response into the sink. The exchange
   * returned is cancelled when the client goes away, and resumed when its socket drains.
   */
  send(request: UpstreamRequest, sink: ResponseSink): Exchange {
    const exchange = new Exchange(this.#context, request, sink)
    exchange.dispatch()
    return exchange
  }

  async close(): Promise<void> {
    await this.#context.agent.destroy()
  }
}

/**
 * One media request's upstream side, across its attempts. It is undici's handler for each
 * attempt in turn (one at a time: the next starts after the last one's onComplete or onError).
 */
export class Exchange implements Dispatcher.DispatchHandler {
  readonly #context: ExchangeContext
  readonly #request: UpstreamRequest
  readonly #sink: ResponseSink
  #attempt = 0
  #refreshed = false
  #cancelled = false
  /** The response of this attempt is being relayed (false: discarded before a retry). */
  #relaying = false
  #retryReason: RetryReason | undefined
  #started = 0
  #abortAttempt: ((reason?: Error) => void) | undefined
  #resume: (() => void) | undefined
  /** The status of the response being relayed. */
  #status = 0
  /** Body bytes still to come (Content-Length), or how else the relayed body ends. */
  #bodyLeft: BodyLeft = 'chunked'
  #backoffTimer: NodeJS.Timeout | undefined

  constructor(context: ExchangeContext, request: UpstreamRequest, sink: ResponseSink) {
    this.#context = context
    this.#request = request
    this.#sink = sink
  }

  dispatch(): void {
    if (this.#cancelled) return
    this.#relaying = false
    this.#retryReason = undefined
    this.#started = performance.now()
    const { agent, origin } = this.#context
    const request = this.#request
    const headers = [...request.headers, 'authorization', `Bearer ${request.token.value}`]
    agent.dispatch({ origin, path: request.path, method: request.method, headers }, this)
  }

  /** The client went away: abort the upstream request, or the wait before a retry; the sink hears nothing more. */
  cancel(): void {
    if (this.#cancelled) return
    this.#cancelled = true
    clearTimeout(this.#backoffTimer)
    this.#abortAttempt?.(new Error('client went away'))
  }

  /** For the sink: the client's socket has drained. */
  readonly resume = (): void => {
    this.#resume?.()
  }

  onConnect(abort: (reason?: Error) => void): void {
    this.#abortAttempt = abort
    if (this.#cancelled) abort(new Error('client went away'))
  }

  onHeaders(status: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx (103 Early Hints): informational, the real response follows.
    if (this.#cancelled || status < 200) return true
    const request = this.#request
    const seconds = (performance.now() - this.#started) / 1000
    request.upstreamStatus = status
    request.upstreamMs = seconds * 1000
    this.#context.events.onResponse?.(status, seconds)
    this.#retryReason = RETRYABLE_STATUSES[status] ?? (status === 401 ? 'unauthorized' : undefined)
    if (this.#retryReason) return true // the body is read and dropped; onComplete decides
    if (status > 599) {
      // Not an HTTP status a client could be given: a broken upstream, as for a reset.
      this.#sink.fail(errors.upstreamUnavailable())
      this.cancel()
      return true
    }
    this.#relaying = true
    this.#status = status
    this.#resume = resume
    this.#bodyLeft = bodyFraming(rawHeaders)
    this.#sink.start(status, rawHeaders)
    return true
  }

  onData(chunk: Buffer): boolean {
    if (!this.#relaying || this.#cancelled) return true
    const more = this.#sink.data(chunk)
    if (typeof this.#bodyLeft === 'number') this.#bodyLeft -= chunk.length
    // Not every body may be paused: see BodyLeft.
    return more || this.#bodyLeft === 0 || this.#bodyLeft === 'unpausable'
  }

  onComplete(): void {
    if (this.#cancelled) return
    if (this.#relaying) {
      this.#sink.end()
      return
    }
    const reason = this.#retryReason
    if (reason === 'unauthorized') void this.#refreshAndRetry()
    else if (reason && this.#attempt < this.#context.policy.maxRetries) this.#backoff(reason)
    else this.#sink.fail(errors.upstreamUnavailable())
  }

  onError(error: Error): void {
    if (this.#cancelled) return
    if (this.#relaying) {
      // A 304 or 204 never has a body, whatever Content-Length says (RFC 9110 8.6); undici 7
      // still expects one and reports the shortfall.
      const bodiless = this.#status === 304 || this.#status === 204
      if (bodiless && (error as NodeJS.ErrnoException).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
        this.#sink.end()
      } else {
        this.#sink.abort(error)
      }
      return
    }
    // The body of a 401 or a 502/503/504 was being read only to be dropped: losing it changes
    // nothing, so the retry goes ahead as if it had ended.
    if (this.#retryReason !== undefined) {
      this.onComplete()
      return
    }
    const code = (error as NodeJS.ErrnoException).code ?? ''
    const retryable = RETRYABLE_ERRORS.has(code)
    if (retryable && this.#attempt < this.#context.policy.maxRetries) {
      this.#backoff(code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect_error' : 'reset')
    } else if (code === 'UND_ERR_HEADERS_TIMEOUT') {
      this.#sink.fail(errors.upstreamTimeout(error))
    } else {
      this.#sink.fail(errors.upstreamUnavailable(error))
    }
  }

  #backoff(reason: RetryReason): void {
    const policy = this.#context.policy
    this.#request.retries++
    this.#context.events.onRetry?.(reason)
    // Full jitter: spreads the retries of many clients hit by the same upstream blip.
    const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** this.#attempt)
    this.#attempt++
    this.#backoffTimer = setTimeout(() => void this.#retryWithCurrentToken(), Math.random() * ceiling)
  }

  /** Retries can take a while (connect timeouts, backoff): each takes the current token. */
  async #retryWithCurrentToken(): Promise<void> {
    try {
      this.#request.token = await this.#context.tokens.get()
    } catch (err) {
      if (!this.#cancelled) this.#sink.fail(err as ProxyError)
      return
    }
    this.dispatch()
  }

  /** One 401: drop the token (once for every request refused with it), sign anew, retry. */
  async #refreshAndRetry(): Promise<void> {
    if (this.#refreshed) {
      this.#sink.fail(errors.upstreamUnauthorized())
      return
    }
    this.#refreshed = true
    const tokens = this.#context.tokens
    tokens.invalidate(this.#request.token)
    this.#request.retries++
    this.#context.events.onRetry?.('unauthorized')
    // The 401 refresh does not use up a connection-failure retry.
    await this.#retryWithCurrentToken()
  }
}
