// One request on the media port, from its arrival to its end, whatever route serves it: it
// counts the body bytes its response is given and the socket accepts, holds the media download
// the route attached, and when the request is over it lets the download release what it holds,
// then emits the request's one Outcome.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RequestSpan, Tracing } from '../observability/tracing.js'
import { splitTarget } from './media-paths.js'
import { CLIENT_CLOSED_REQUEST, type MediaOutcome, type Outcome } from './outcome.js'
import { onRequestEnd } from './request-end.js'

const MAX_LOGGED_LENGTH = 256

/** What the media route attaches: its resources, released once the request is over. */
export interface RequestResources {
  /** The request is over; free everything and say what the media request came to. */
  release(finished: boolean): MediaOutcome
}

export class ServedRequest {
  readonly #request: FastifyRequest
  readonly #reply: FastifyReply
  readonly #started = performance.now()
  /** Read on arrival: once the client has gone away, the socket no longer knows its peer. */
  readonly #remoteAddress: string | undefined
  readonly #onOutcome: (outcome: Outcome) => void
  #bodyBytes = 0
  #acceptedBytes = 0
  #resources: RequestResources | undefined
  /** The request's server span (a shared no-op with tracing off). */
  readonly span: RequestSpan

  /** The span upstream attempts are children of; undefined with tracing off (nothing to do). */
  get traceParent(): RequestSpan | undefined {
    return this.#traced ? this.span : undefined
  }
  readonly #traced: boolean
  /** The path as logged and traced (see pathOf). */
  readonly #path: string
  #cut = false

  constructor(request: FastifyRequest, reply: FastifyReply, tracing: Tracing, onOutcome: (outcome: Outcome) => void) {
    this.#request = request
    this.#reply = reply
    this.#remoteAddress = request.ip
    this.#onOutcome = onOutcome
    this.#traced = tracing.enabled
    this.#path = truncate(pathOf(request.url))
    this.span = tracing.startRequest(
      request.method,
      request.routeOptions.url ?? 'unmatched',
      this.#path,
      request.headers,
    )
    onRequestEnd(reply.raw, request.raw.socket, () => this.#end())
  }

  /** Body bytes handed to the response. */
  wrote(bytes: number): void {
    this.#bodyBytes += bytes
  }

  /** Body bytes the socket has taken (a write's callback came back without error). */
  accepted(bytes: number): void {
    this.#acceptedBytes += bytes
  }

  attach(resources: RequestResources): void {
    this.#resources = resources
  }

  /** The response was cut short because its upstream body broke (or its client stalled). */
  cutShort(reason: string): void {
    this.#cut = true
    this.span.event('response_cut', { bytes: this.#acceptedBytes, errorType: reason })
  }

  #end(): void {
    const res = this.#reply.raw
    const request = this.#request
    const finished = res.writableFinished
    const media = this.#resources?.release(finished) ?? null
    const userAgent = request.headers['user-agent']
    if (!finished && !this.#cut) this.span.event('client_aborted', { bytes: this.#acceptedBytes })
    const outcome: Outcome = {
      requestId: request.id,
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      path: this.#path,
      status: res.headersSent ? res.statusCode : CLIENT_CLOSED_REQUEST,
      bytes: finished ? this.#bodyBytes : this.#acceptedBytes,
      seconds: (performance.now() - this.#started) / 1000,
      aborted: !finished,
      remoteAddress: this.#remoteAddress,
      userAgent: userAgent === undefined ? undefined : truncate(userAgent),
      media,
      trace: this.#traced ? this.span : undefined,
    }
    this.span.end(outcome)
    this.#onOutcome(outcome)
  }
}

/**
 * The path to log and trace: without the query (a link's signature), without an absolute-form
 * target's authority (the client's choice, not ours), and with anything that still looks like
 * a signature (a link percent-encoded into the path) blanked.
 */
function pathOf(url: string): string {
  // The origin form, as nearly every request comes: no authority to drop.
  const query = url.indexOf('?')
  const path = url.startsWith('/') ? (query === -1 ? url : url.slice(0, query)) : splitTarget(url).path
  return /signature/i.test(path) ? path.replace(/(signature(?:=|%3d))[^&/]*/gi, '$1[redacted]') : path
}

function truncate(value: string): string {
  return value.length > MAX_LOGGED_LENGTH ? value.slice(0, MAX_LOGGED_LENGTH) : value
}
