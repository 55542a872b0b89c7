// What to do with one upstream attempt's answer: relay it, retry after a delay, sign a fresh
// token and retry, or give the client a problem. A pure function of the attempt's result and
// the exchange's history, so that every case is unit-tested without a socket; upstream.ts
// only carries out the decision.
import { errors, type ProxyError } from '../errors.js'

export type RetryReason = 'connect_error' | 'reset' | 'status_502' | 'status_503' | 'status_504' | 'unauthorized'

export interface RetryPolicy {
  /** Retries after connection failures and 502/503/504 (the 401 refresh is not one of them). */
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1_000 }

/**
 * What an attempt came to: a final (non-1xx) response status, or an error before any (its
 * code, and the error itself, kept as the problem's cause for the log).
 */
export type AttemptResult = { status: number } | { errorCode: string; cause?: unknown }

export interface ExchangeHistory {
  /** Retries already made for connection failures and 502/503/504. */
  retries: number
  /** Whether the one 401 refresh has been used. */
  refreshed: boolean
}

export type Decision =
  | { action: 'relay' }
  | { action: 'retry'; reason: RetryReason; delayMs: number }
  | { action: 'refresh' }
  | { action: 'fail'; problem: ProxyError }

const RETRYABLE_STATUSES: Readonly<Record<number, RetryReason>> = {
  502: 'status_502',
  503: 'status_503',
  504: 'status_504',
}

/** Errors before response headers after which the request surely did no harm to repeat. */
const RETRYABLE_ERRORS: Readonly<Record<string, RetryReason>> = {
  ECONNREFUSED: 'connect_error',
  UND_ERR_CONNECT_TIMEOUT: 'connect_error',
  EAI_AGAIN: 'connect_error',
  ECONNRESET: 'reset',
  EPIPE: 'reset',
  UND_ERR_SOCKET: 'reset',
}

/**
 * The decision for one attempt. `random` in [0, 1) spreads the delay (full jitter), so that
 * the retries of many clients hit by one upstream blip do not arrive together.
 */
export function decide(
  result: AttemptResult,
  history: ExchangeHistory,
  policy: RetryPolicy,
  random: () => number = Math.random,
): Decision {
  let reason: RetryReason | undefined
  if ('status' in result) {
    if (result.status === 401) {
      return history.refreshed ? { action: 'fail', problem: errors.upstreamUnauthorized() } : { action: 'refresh' }
    }
    // Not an HTTP status a client could be given: a broken upstream, as for a reset.
    if (result.status > 599) return { action: 'fail', problem: errors.upstreamUnavailable() }
    reason = RETRYABLE_STATUSES[result.status]
    if (reason === undefined) return { action: 'relay' }
  } else {
    if (result.errorCode === 'UND_ERR_HEADERS_TIMEOUT') {
      return { action: 'fail', problem: errors.upstreamTimeout(result.cause) }
    }
    reason = RETRYABLE_ERRORS[result.errorCode]
    if (reason === undefined) return { action: 'fail', problem: errors.upstreamUnavailable(result.cause) }
  }
  if (history.retries >= policy.maxRetries) {
    return { action: 'fail', problem: errors.upstreamUnavailable('cause' in result ? result.cause : undefined) }
  }
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** history.retries)
  return { action: 'retry', reason, delayMs: random() * ceiling }
}
