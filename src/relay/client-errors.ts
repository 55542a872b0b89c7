// Requests that never reach a route: what Node's HTTP parser refuses (malformed lines, headers
// over the size limit, timeouts), CONNECT, and an Expect other than 100-continue. Each still
// gets a problem+json answer and a clean close, never a silently dropped connection.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { errors, type ProxyError, problemResponse } from '../errors.js'

/** How long the rest of a refused request is read and discarded before the socket is closed. */
const LINGER_MS = 1_000
const answered = new WeakSet<Duplex>()

/** Fastify's clientErrorHandler: the parser refused the request. */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  answer(socket, problemFor(error.code))
}

/** The 'connect' event: the proxy is no forward proxy, and Node would drop the socket. */
function refuseConnect(_request: IncomingMessage, socket: Duplex): void {
  answer(socket, errors.methodNotAllowed(), 'Allow: GET, HEAD\r\n')
}

/** The 'checkExpectation' event: an Expect other than 100-continue, which Node answers bare. */
function refuseExpectation(_request: IncomingMessage, response: ServerResponse): void {
  const requestId = randomUUID()
  const { body, headers } = problemResponse(errors.expectationFailed(), requestId)
  response.writeHead(417, {
    ...headers,
    'content-length': body.length,
    'x-request-id': requestId,
    // The request may carry a body or an Upgrade we will not read: close rather than guess.
    connection: 'close',
  })
  response.end(body)
}

export function guardServer(server: Server): void {
  // Node drops headers past the 2,000th from req.headers, though its parser acts on them (an
  // Upgrade, say). The 16 KiB size limit already bounds the count, so keep them all.
  server.maxHeadersCount = 0
  server.on('connect', refuseConnect)
  server.on('checkExpectation', refuseExpectation)
}

function problemFor(code: string | undefined): ProxyError {
  if (code === 'HPE_HEADER_OVERFLOW') return errors.headersTooLarge()
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return errors.requestTimeout()
  return errors.badRequest()
}

function answer(socket: Duplex, error: ProxyError, extraHeaders = ''): void {
  // The parser reports every later chunk of a refused request again: answer once.
  if (answered.has(socket)) return
  answered.add(socket)
  const requestId = randomUUID()
  const { body, headers } = problemResponse(error, requestId)
  if (socket.writable) {
    const head =
      `HTTP/1.1 ${error.status} ${error.title}\r\nContent-Type: ${headers['content-type']}\r\n` +
      `Content-Length: ${body.length}\r\nX-Request-Id: ${requestId}\r\n${extraHeaders}Connection: close\r\n\r\n`
    socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]))
  }
  // A lingering close, as nginx does: closing with unread input makes the kernel send a reset,
  // which can destroy the answer before the client reads it. Read and drop the rest first.
  socket.resume()
  setTimeout(() => socket.destroy(), LINGER_MS).unref()
}
