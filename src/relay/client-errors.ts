// Requests that never reach a route: what Node's HTTP parser refuses (malformed lines, headers
// over the size limit, timeouts), CONNECT, and an Expect other than 100-continue. Each still
// gets a problem+json answer and a clean close, never a silently dropped connection, and on the
// media port it is reported, so that it is logged and counted like any other answer.
import { randomUUID } from 'node:crypto'
import { type IncomingMessage, METHODS, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { errors, type ProxyError, problemResponse } from '../errors.js'
import { SAFE_DELIVERY_HEADERS } from '../links/safe-delivery.js'
import { afterOpenRequests } from './request-end.js'

/** How long the rest of a refused request is read and discarded before the socket is closed. */
const LINGER_MS = 1_000
/** A refused request line is read this far, for the log. */
const MAX_REQUEST_LINE = 8 * 1024
const KNOWN_METHODS = new Set(METHODS)

/** A request refused before any route, as the access log and the metrics see it. */
export interface Refusal {
  readonly requestId: string
  readonly status: number
  readonly bytes: number
  /** The method when it is one Node knows, else '-' (it becomes a metric label). */
  readonly method: string
  readonly path: string
  readonly remoteAddress: string | undefined
  readonly userAgent: string | undefined
}

/** What every response on the media port carries, these raw ones too (see headers.ts). */
const SAFE_DELIVERY = Object.entries(SAFE_DELIVERY_HEADERS)
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join('')

export class EarlyRefusals {
  readonly #onRefusal: ((refusal: Refusal) => void) | undefined
  readonly #answered = new WeakSet<Duplex>()

  constructor(onRefusal?: (refusal: Refusal) => void) {
    this.#onRefusal = onRefusal
  }

  /** Fastify's clientErrorHandler: the parser refused what came on this socket. */
  readonly clientError = (
    error: Error & { code?: string; rawPacket?: unknown; bytesParsed?: number },
    socket: Socket,
  ): void => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return
    const raw = Buffer.isBuffer(error.rawPacket) ? error.rawPacket : undefined
    const refusal = {
      ...requestLine(raw, error.bytesParsed),
      remoteAddress: socket.remoteAddress,
      userAgent: undefined,
    }
    // Requests before the bad one on a pipelined connection are answered first, then this one.
    afterOpenRequests(socket, () => this.#answer(socket, problemFor(error.code), refusal))
  }

  guard(server: Server): void {
    // Node drops headers past the 2,000th from req.headers, though its parser acts on them (an
    // Upgrade, say). The 16 KiB size limit already bounds the count, so keep them all.
    server.maxHeadersCount = 0
    server.on('connect', this.#refuseConnect)
    server.on('checkExpectation', this.#refuseExpectation)
  }

  /** The 'connect' event: the proxy is no forward proxy, and Node would drop the socket. */
  readonly #refuseConnect = (request: IncomingMessage, socket: Duplex): void => {
    this.#answer(socket, errors.methodNotAllowed(), describe(request), 'Allow: GET, HEAD\r\n')
  }

  /** The 'checkExpectation' event: an Expect other than 100-continue, which Node answers bare. */
  readonly #refuseExpectation = (request: IncomingMessage, response: ServerResponse): void => {
    const requestId = randomUUID()
    const error = errors.expectationFailed()
    const { body, headers } = problemResponse(error, requestId)
    response.writeHead(error.status, {
      ...headers,
      'content-length': body.length,
      'x-request-id': requestId,
      ...SAFE_DELIVERY_HEADERS,
      // The request may carry a body or an Upgrade we will not read: close rather than guess.
      connection: 'close',
    })
    response.end(body)
    this.#onRefusal?.({ requestId, status: error.status, bytes: body.length, ...describe(request) })
  }

  #answer(socket: Duplex, error: ProxyError, request: Omit<Refusal, 'requestId' | 'status' | 'bytes'>, extra = '') {
    // The parser reports every later chunk of a refused request again: answer once.
    if (this.#answered.has(socket)) return
    this.#answered.add(socket)
    const requestId = randomUUID()
    const { body, headers } = problemResponse(error, requestId)
    if (socket.writable) {
      const head =
        `HTTP/1.1 ${error.status} ${error.title}\r\nContent-Type: ${headers['content-type']}\r\n` +
        `Content-Length: ${body.length}\r\nX-Request-Id: ${requestId}\r\n${SAFE_DELIVERY}${extra}Connection: close\r\n\r\n`
      socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]))
    }
    // A lingering close, as nginx does: closing with unread input makes the kernel send a reset,
    // which can destroy the answer before the client reads it. Read and drop the rest first.
    socket.resume()
    setTimeout(() => socket.destroy(), LINGER_MS).unref()
    this.#onRefusal?.({ requestId, status: error.status, bytes: body.length, ...request })
  }
}

function problemFor(code: string | undefined): ProxyError {
  if (code === 'HPE_HEADER_OVERFLOW') return errors.headersTooLarge()
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return errors.requestTimeout()
  return errors.badRequest()
}

function describe(request: IncomingMessage): Omit<Refusal, 'requestId' | 'status' | 'bytes'> {
  const userAgent = request.headers['user-agent']
  return {
    method: knownMethod(request.method),
    path: pathOf(request.url ?? ''),
    remoteAddress: request.socket.remoteAddress,
    userAgent: userAgent?.slice(0, 256),
  }
}

/**
 * Method and path of the refused request, when its first line reads as a request line. The
 * packet may hold requests before it (pipelined): the refused one starts after the last blank
 * line before the point where parsing failed.
 */
function requestLine(raw: Buffer | undefined, failedAt = 0): { method: string; path: string } {
  if (raw === undefined) return { method: '-', path: '' }
  const before = raw.subarray(0, Math.min(failedAt, raw.length))
  const blank = before.lastIndexOf('\r\n\r\n')
  const start = blank === -1 ? 0 : blank + 4
  const line =
    raw
      .subarray(start, start + MAX_REQUEST_LINE)
      .toString('latin1')
      .split('\r\n', 1)[0] ?? ''
  const [method, target] = line.split(' ')
  return { method: knownMethod(method), path: target?.startsWith('/') ? pathOf(target) : '' }
}

function knownMethod(method: string | undefined): string {
  return method !== undefined && KNOWN_METHODS.has(method) ? method : '-'
}

function pathOf(target: string): string {
  const query = target.indexOf('?')
  return (query === -1 ? target : target.slice(0, query)).slice(0, 256)
}
