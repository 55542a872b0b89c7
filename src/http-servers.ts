// What the media and admin servers share: Fastify's options (logging off for requests, the
// request id, header limits, parser-level answers), problem+json for every error either
// produces, and the answers that need no route.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify'
import type { Logger } from 'pino'
import { errors, sendProblem, toProxyError } from './errors.js'
import type { EarlyRefusals } from './relay/client-errors.js'
import { responseBasics } from './relay/headers.js'

/** A caller's X-Request-Id is kept only when it is short and of a safe charset. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
/** Header-size limit of both ports; larger requests get 431 from Node's parser. */
const MAX_HEADER_BYTES = 16 * 1024

export function serverOptions(logger: Logger, refusals: EarlyRefusals) {
  return {
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    genReqId,
    requestIdHeader: false as const,
    // Fastify ignores a top-level maxHeaderSize; Node's server takes it from `http`.
    // Host is checked by refuseEarly instead of Node, whose own 400 for it is bare, not problem+json.
    http: { maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false },
    // find-my-way answers 414 for long params before our validation could; ids are checked by us.
    routerOptions: { maxParamLength: 1024 },
    return503OnClosing: false,
    clientErrorHandler: refusals.clientError,
    frameworkErrors: (error: Error, request: FastifyRequest, reply: FastifyReply) => {
      // Bad URLs and the like: no onRequest hook has run.
      reply.headers(responseBasics(request))
      return sendProblem(reply, toProxyError(error))
    },
  }
}

/** Before any plugin (encapsulated contexts copy the handler when they are registered). */
export function prepareServer(server: FastifyInstance, refusals: EarlyRefusals): void {
  server.setErrorHandler(sendErrorAsProblem)
  refusals.guard(server.server)
}

/**
 * Answers that need no route: an HTTP/1.1 request without Host (RFC 9112 requires a 400), and,
 * while draining, a request on a connection that was already open (Fastify's
 * return503OnClosing would answer plain JSON, unlogged). Both close the connection.
 */
export function refuseEarly(request: FastifyRequest, reply: FastifyReply, draining: boolean): boolean {
  const missingHost = request.raw.httpVersion === '1.1' && request.headers.host === undefined
  if (!missingHost && !draining) return false
  reply.header('x-request-id', request.id).header('connection', 'close')
  sendProblem(reply, missingHost ? errors.badRequest() : errors.shuttingDown())
  return true
}

/** Every error either server produces goes out as problem+json, never Fastify's own JSON. */
function sendErrorAsProblem(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const problem = toProxyError(error)
  if (problem.status >= 500) {
    request.log.error(
      { code: problem.code, reason: error instanceof Error ? error.message : String(error) },
      'request failed',
    )
  }
  return sendProblem(reply, problem)
}

function genReqId(req: IncomingMessage): string {
  const header = req.headers['x-request-id']
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID()
}
