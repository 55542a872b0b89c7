// One access-log line per request on the media port, from its Outcome: written when the
// request is over (see relay/served-request.ts), since fastify's onResponse hook never runs for
// a client that aborted mid-stream (fastify#6208), and those are the requests an operator most
// needs to see.
//
// The line is in pino's format (level, time, pid, hostname, then the fields and msg) and goes
// to the logger's own destination, so it stays in order with every other line; it is
// serialised here because it is written for every request, and pino's generic serialiser cost
// more than everything else this proxy adds to a small request.
import { hostname } from 'node:os'
import type { DestinationStream } from 'pino'
import type { Outcome } from '../relay/outcome.js'

const INFO = 30

/** What pino puts after the time of every line by default: pid and hostname. */
export const LOG_BASE = { pid: process.pid, hostname: hostname() }

export class AccessLog {
  readonly #destination: DestinationStream
  readonly #base = `,"pid":${LOG_BASE.pid},"hostname":${JSON.stringify(LOG_BASE.hostname)}`

  constructor(destination: DestinationStream) {
    this.#destination = destination
  }

  /**
   * reqId (a validated charset or a UUID), method (a token Node's parser accepted), mediaId (a
   * UUID), application (a UUID), upstreamHost (a configured host name) and the peer address
   * need no escaping; path
   * and user agent come from the client.
   */
  write(outcome: Outcome): void {
    const media = outcome.media
    const userAgent = outcome.userAgent
    const remoteAddress = outcome.remoteAddress
    this.#destination.write(
      `{"level":${INFO},"time":${Date.now()}${this.#base},"reqId":"${outcome.requestId}"` +
        `,"method":"${outcome.method}","path":${JSON.stringify(outcome.path)}` +
        `,"mediaId":${media ? `"${media.mediaId}"` : 'null'},"status":${outcome.status}` +
        `,"bytes":${outcome.bytes},"durationMs":${round(outcome.seconds * 1000)}` +
        `,"application":${media ? `"${media.application}"` : null}` +
        `,"upstreamHost":${media ? `"${media.upstreamHost}"` : null}` +
        `,"upstreamStatus":${media?.upstreamStatus ?? null}` +
        `,"upstreamMs":${media?.upstreamMs == null ? null : round(media.upstreamMs)}` +
        `,"retries":${media?.retries ?? 0}${media?.cache ? `,"cache":"${media.cache}"` : ''}${media?.linkExpires ? `,"linkExpires":${media.linkExpires}` : ''},"remoteAddress":${remoteAddress ? `"${remoteAddress}"` : null}` +
        `,"userAgent":${userAgent === undefined ? null : JSON.stringify(userAgent)}` +
        `,"aborted":${outcome.aborted}${outcome.trace ? `,"traceId":"${outcome.trace.traceId}"` : ''}` +
        `,"msg":"request completed"}\n`,
    )
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100
}
