// One access-log line and one metrics observation per request on the media port, written
// when the response closes (see request-end.ts): fastify's onResponse hook never runs for a
// client that aborted mid-stream (fastify#6208), and those are the requests an operator most
// needs to see.
//
// The line is pino's own format (same level, time, pid, hostname, reqId and msg fields, same
// destination), but serialised here: it is written for every request, and pino's generic
// serialiser cost more than everything else this proxy adds to a small request.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import pino, { type Logger } from 'pino'
import type { Metrics } from './metrics.js'
import { onRequestEnd } from './request-end.js'

/** nginx's convention for "the client went away before a response was sent". */
export const CLIENT_CLOSED_REQUEST = 499
const MAX_LOGGED_LENGTH = 256
const INFO = 30

declare module 'fastify' {
  interface FastifyRequest {
    /** Body bytes written to the client (relayed or problem+json). */
    bytesSent: number
    /** Called when the request is over, before its line is logged: frees what the route held. */
    onEnd: ((finished: boolean) => void) | null
  }
}

export class AccessLog {
  readonly #metrics: Metrics
  readonly #write: LineWriter | undefined

  constructor(metrics: Metrics, logger: Logger) {
    this.#metrics = metrics
    this.#write = lineWriter(logger)
  }

  /** The request fields this log reads; call once on the server, before it is ready. */
  decorate(app: FastifyInstance): void {
    app.decorateRequest('bytesSent', 0)
    app.decorateRequest('onEnd', null)
  }

  /** From an onRequest hook: the request's line and metrics are written when it is over. */
  track(request: FastifyRequest, reply: FastifyReply): void {
    const started = performance.now()
    // Read now: once the client has gone away, the socket no longer knows its peer.
    const remoteAddress = request.ip
    onRequestEnd(reply, () => {
      const res = reply.raw
      const finished = res.writableFinished
      request.onEnd?.(finished)
      const seconds = (performance.now() - started) / 1000
      const status = res.headersSent ? res.statusCode : CLIENT_CLOSED_REQUEST
      const route = request.routeOptions.url ?? 'unmatched'
      this.#metrics.observeRequest(request.method, route, status, seconds, request.bytesSent)
      this.#write?.(request, status, seconds, remoteAddress, !finished)
    })
  }
}

type LineWriter = (
  request: FastifyRequest,
  status: number,
  seconds: number,
  remoteAddress: string | undefined,
  aborted: boolean,
) => void

/** Writes "request completed" lines to the logger's destination; undefined below info level. */
function lineWriter(logger: Logger): LineWriter | undefined {
  if (!logger.isLevelEnabled('info')) return undefined
  const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[pino.symbols.streamSym]
  // ',"pid":…,"hostname":"…"': the base bindings pino puts after the time.
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym]
  if (!stream) return undefined
  // reqId (validated charset or a UUID), method (a token Node's parser knows), mediaId (a UUID)
  // and the peer address need no escaping; path and user agent come from the client as they are.
  return (request, status, seconds, remoteAddress, aborted) => {
    const media = request.media
    const userAgent = request.headers['user-agent']
    stream.write(
      `{"level":${INFO},"time":${Date.now()}${bindings},"reqId":"${request.id}","method":"${request.method}"` +
        `,"path":${JSON.stringify(truncate(pathOf(request.url)))}` +
        `,"mediaId":${media ? `"${media.mediaId}"` : 'null'},"status":${status}` +
        `,"bytes":${request.bytesSent},"durationMs":${round(seconds * 1000)}` +
        `,"upstreamStatus":${media?.upstreamStatus ?? null}` +
        `,"upstreamMs":${media?.upstreamMs === undefined ? null : round(media.upstreamMs)}` +
        `,"retries":${media?.retries ?? 0},"remoteAddress":${remoteAddress ? `"${remoteAddress}"` : null}` +
        `,"userAgent":${userAgent === undefined ? null : JSON.stringify(truncate(userAgent))}` +
        `,"aborted":${aborted},"msg":"request completed"}\n`,
    )
  }
}

function pathOf(url: string): string {
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}

function truncate(value: string): string {
  return value.length > MAX_LOGGED_LENGTH ? value.slice(0, MAX_LOGGED_LENGTH) : value
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100
}
