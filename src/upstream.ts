// The upstream client: one undici Agent (TLS verified, our timeouts, no pipelining) plus the
// retry policy. reply-from hands every request to request() as it would to an undici Pool;
// before the response reaches the client, this is where the token is injected, connection
// failures and 502/503/504 are retried with jittered backoff, and a 401 gets one fresh token.
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, type Dispatcher } from 'undici'
import type { Config } from './config.js'
import { errors } from './errors.js'
import type { Token, TokenCache } from './token-cache.js'

/** Attached to the outgoing headers object under a symbol (reply-from copies symbols along). */
export const EXCHANGE = Symbol('vonage-media-proxy.exchange')

export type RetryReason = 'connect_error' | 'reset' | 'status_502' | 'status_503' | 'status_504' | 'unauthorized'

/** What the upstream client learns about one media request; read by the route and the access log. */
export interface UpstreamExchange {
  token: Token
  /** Aborted when the client goes away: cancels the upstream request, even before headers. */
  readonly signal: AbortSignal
  retries: number
  upstreamStatus: number | undefined
  upstreamMs: number | undefined
}

export interface RetryPolicy {
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1_000 }

export interface UpstreamClientOptions {
  retry?: RetryPolicy
  onRetry?: (reason: RetryReason) => void
  /** Upstream status and time to headers, per final response. */
  onResponse?: (status: number, seconds: number) => void
}

/** The request reply-from passes to an undici-like dispatcher. */
interface ForwardedRequest {
  origin: string
  path: string
  method: string
  headers: Record<string | symbol, unknown>
  body?: unknown
}

interface ForwardedResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  body: Readable
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

export class UpstreamClient {
  readonly #agent: Agent
  readonly #tokens: TokenCache
  readonly #retry: RetryPolicy
  readonly #options: UpstreamClientOptions

  constructor(config: Config, tokens: TokenCache, options: UpstreamClientOptions = {}) {
    this.#tokens = tokens
    this.#retry = options.retry ?? DEFAULT_RETRY_POLICY
    this.#options = options
    this.#agent = new Agent({
      // reply-from's own agent turns certificate checks off; ours never does.
      connect: { rejectUnauthorized: true, timeout: config.upstreamConnectTimeoutMs },
      headersTimeout: config.upstreamHeadersTimeoutMs,
      bodyTimeout: config.upstreamBodyTimeoutMs,
      // A slow media stream must not hold up the requests queued behind it.
      pipelining: 1,
    })
  }

  /** reply-from's dispatcher interface. */
  request(req: ForwardedRequest, callback: (err: Error | null, res?: ForwardedResponse) => void): void {
    const { signal } = req.headers[EXCHANGE] as UpstreamExchange
    this.#send(req).then(
      (res) => callback(null, res),
      (err: Error) => {
        // The client went away and the request was aborted for that: there is no one to answer,
        // and reply-from would log every such abort as a warning.
        if (!signal.aborted) callback(err)
      },
    )
  }

  async close(): Promise<void> {
    await this.#agent.destroy()
  }

  async #send(req: ForwardedRequest): Promise<ForwardedResponse> {
    const exchange = req.headers[EXCHANGE] as UpstreamExchange
    const { [EXCHANGE]: _, ...headers } = req.headers
    let refreshed = false
    for (let attempt = 0; ; attempt++) {
      // Retries can take a while (connect timeouts, backoff): each one takes the current token,
      // so none is sent below the quarter-lifetime floor. A cache hit, almost always.
      if (attempt > 0) exchange.token = await this.#tokens.get()
      headers.authorization = `Bearer ${exchange.token.value}`
      const started = performance.now()
      let res: Dispatcher.ResponseData
      try {
        res = await this.#agent.request({
          origin: req.origin,
          path: req.path,
          method: req.method as Dispatcher.HttpMethod,
          headers: headers as Record<string, string>,
          signal: exchange.signal,
        })
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? ''
        if (!exchange.signal.aborted && RETRYABLE_ERRORS.has(code) && attempt < this.#retry.maxRetries) {
          await this.#backoff(
            exchange,
            attempt,
            code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect_error' : 'reset',
          )
          continue
        }
        throw err
      }
      const status = res.statusCode
      const seconds = (performance.now() - started) / 1000
      exchange.upstreamStatus = status
      exchange.upstreamMs = seconds * 1000
      this.#options.onResponse?.(status, seconds)

      const retryReason = RETRYABLE_STATUSES[status]
      if (retryReason) {
        await res.body.dump()
        if (attempt < this.#retry.maxRetries && !exchange.signal.aborted) {
          await this.#backoff(exchange, attempt, retryReason)
          continue
        }
        throw errors.upstreamUnavailable()
      }
      if (status === 401) {
        await res.body.dump()
        if (refreshed) throw errors.upstreamUnauthorized()
        refreshed = true
        this.#tokens.invalidate(exchange.token)
        exchange.token = await this.#tokens.get()
        exchange.retries++
        this.#options.onRetry?.('unauthorized')
        attempt-- // the 401 refresh does not use up a connection-failure retry
        continue
      }
      return { statusCode: status, headers: res.headers as IncomingHttpHeaders, body: res.body }
    }
  }

  async #backoff(exchange: UpstreamExchange, attempt: number, reason: RetryReason): Promise<void> {
    exchange.retries++
    this.#options.onRetry?.(reason)
    // Full jitter: spreads the retries of many clients hit by the same upstream blip.
    const ceiling = Math.min(this.#retry.maxDelayMs, this.#retry.baseDelayMs * 2 ** attempt)
    await sleep(Math.random() * ceiling, undefined, { signal: exchange.signal })
  }
}
