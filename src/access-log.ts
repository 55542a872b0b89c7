// One access-log line and one metrics observation per request on the media port, written
// when the response closes (see request-end.ts): fastify's onResponse hook never runs for a
// client that aborted mid-stream (fastify#6208), and those are the requests an operator most
// needs to see.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Metrics } from './metrics.js'
import { onRequestEnd } from './request-end.js'

/** nginx's convention for "the client went away before a response was sent". */
export const CLIENT_CLOSED_REQUEST = 499
const MAX_LOGGED_LENGTH = 256

export interface AccessLogOptions {
  metrics: Metrics
}

async function accessLogPlugin(app: FastifyInstance, { metrics }: AccessLogOptions): Promise<void> {
  app.addHook('onRequest', (request, reply, done) => {
    const started = performance.now()
    // Read now: once the client has gone away, the socket no longer knows its peer.
    const remoteAddress = request.ip
    onRequestEnd(reply, () => {
      const res = reply.raw
      const seconds = (performance.now() - started) / 1000
      const aborted = !res.writableFinished
      const status = res.headersSent ? res.statusCode : CLIENT_CLOSED_REQUEST
      const route = request.routeOptions.url ?? 'unmatched'
      const bytes = request.bytesSent
      const media = request.media
      metrics.observeRequest(request.method, route, status, seconds, bytes)
      request.log.info(
        {
          method: request.method,
          path: truncate(pathOf(request.url)),
          mediaId: media?.mediaId ?? null,
          status,
          bytes,
          durationMs: round(seconds * 1000),
          upstreamStatus: media?.upstreamStatus ?? null,
          upstreamMs: media?.upstreamMs === undefined ? null : round(media.upstreamMs),
          retries: media?.retries ?? 0,
          remoteAddress,
          userAgent: truncate(request.headers['user-agent'] ?? null),
          aborted,
        },
        'request completed',
      )
    })
    done()
  })
}

function pathOf(url: string): string {
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}

function truncate<T extends string | null>(value: T): T {
  return (value !== null && value.length > MAX_LOGGED_LENGTH ? value.slice(0, MAX_LOGGED_LENGTH) : value) as T
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100
}

export const accessLog = fp(accessLogPlugin, { fastify: '5.x', name: 'access-log' })
