// Builds one proxy instance: the token cache, the upstream client, metrics, and two Fastify
// servers (media and admin) sharing one logger. main.ts and the tests both start from here.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify'
import pino, { type DestinationStream, type Logger } from 'pino'
import { AccessLog } from './access-log.js'
import { adminRoute } from './admin.js'
import { answerClientError, guardServer } from './client-errors.js'
import type { Config } from './config.js'
import { errors, sendProblem, toProxyError } from './errors.js'
import { responseBasics } from './headers.js'
import { KeyWatcher } from './key-watcher.js'
import { LogDestination } from './log-destination.js'
import { InFlightCounter, mediaRoute } from './media-route.js'
import { Metrics } from './metrics.js'
import { type Clock, systemClock, TokenCache, TokenSigner } from './token-cache.js'
import { type RetryPolicy, UpstreamClient } from './upstream.js'
import { VERSION } from './version.js'

/** Under the media prefixes: an unknown method there is 405, not 404. */
const MEDIA_PATH = /^\/(v3\/)?media\//
/** A caller's X-Request-Id is kept only when it is short and of a safe charset. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
/** After the media server has closed, how long its last requests get to record their end. */
const REQUEST_END_WAIT_MS = 1_000
/** Header-size limit of both ports; larger requests get 431 from Node's parser. */
export const MAX_HEADER_BYTES = 16 * 1024

export interface AppDeps {
  clock?: Clock
  /** Where log lines go; stdout by default. */
  logStream?: DestinationStream
  retry?: RetryPolicy
  /** Called by POST /quitquitquit; main.ts wires it to the graceful shutdown. */
  onShutdownRequest?: () => void
  /** How often the key file is re-read as a fallback to the directory watch. */
  keyPollIntervalMs?: number
  /** How long a client may read nothing while its media response waits; 60 s by default. */
  sendTimeoutMs?: number
}

export interface ProxyApp {
  readonly media: FastifyInstance
  readonly admin: FastifyInstance
  readonly tokens: TokenCache
  readonly signer: TokenSigner
  readonly metrics: Metrics
  readonly inFlight: InFlightCounter
  readonly logger: Logger
  readonly draining: boolean
  /** Writes buffered log lines now (before an exit, or after a line someone waits for). */
  flushLogs(): void
  /** Starts both listeners; resolves to their base URLs. */
  listen(): Promise<{ mediaUrl: string; adminUrl: string }>
  /**
   * Graceful stop: readiness fails at once, the media listener stops accepting, in-flight
   * responses get up to graceMs to finish, then whatever remains is cut.
   */
  close(graceMs?: number): Promise<void>
}

export async function buildApp(config: Config, deps: AppDeps = {}): Promise<ProxyApp> {
  const stdout = deps.logStream ? undefined : new LogDestination()
  const logger = pino(
    {
      level: config.logLevel,
      // A second line of defence: nothing logs these on purpose.
      redact: {
        paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'token', 'privateKey'],
        censor: '[redacted]',
      },
    },
    deps.logStream ?? (stdout as LogDestination),
  )
  const inFlight = new InFlightCounter(config.maxInFlightRequests)
  const metrics = new Metrics(VERSION, () => inFlight.count, inFlight.limit)
  const signer = new TokenSigner(
    config.privateKey,
    config.applicationId,
    config.jwtTtlSeconds,
    deps.clock ?? systemClock,
  )
  const tokens = new TokenCache(signer, {
    ttlSeconds: config.jwtTtlSeconds,
    clock: deps.clock ?? systemClock,
    onRefresh: (result, token, error) => {
      metrics.countTokenRefresh(result, token)
      if (result === 'success') logger.debug({ jti: token?.jti, exp: token?.exp }, 'application token signed')
      else
        logger.error(
          { reason: error instanceof Error ? error.message : String(error) },
          'application token signing failed',
        )
    },
  })
  const upstream = new UpstreamClient(config, tokens, {
    retry: deps.retry,
    onRetry: (reason) => metrics.countRetry(reason),
    onResponse: (status, seconds) => metrics.observeUpstream(status, seconds),
  })

  let draining = false
  const media = Fastify(serverOptions(logger))
  // Before any plugin: encapsulated contexts copy the handler when they are registered.
  media.setErrorHandler(sendErrorAsProblem)
  const accessLog = new AccessLog(metrics, logger)
  accessLog.decorate(media)
  const refuse = refuseEarly(() => draining)
  // One hook for all three: the basic headers, the access log (so that refusals are logged),
  // then the early refusals.
  media.addHook('onRequest', (request, reply, done) => {
    setResponseBasics(request, reply)
    accessLog.track(request, reply)
    refuse(request, reply, done)
  })
  await media.register(mediaRoute, { config, tokens, upstream, inFlight, sendTimeoutMs: deps.sendTimeoutMs })
  media.setNotFoundHandler((request, reply) => {
    // Methods Fastify has no route table for (PROPFIND, …) land here even on media paths.
    if (MEDIA_PATH.test(request.url)) {
      reply.header('allow', 'GET, HEAD')
      return sendProblem(reply, errors.methodNotAllowed())
    }
    return sendProblem(reply, errors.notFound())
  })
  media.addHook('onClose', async () => {
    await upstream.close()
  })

  const admin = Fastify(serverOptions(logger))
  admin.setErrorHandler(sendErrorAsProblem)
  // The admin port keeps answering while draining: /readyz must say 503, /metrics stays up.
  admin.addHook(
    'onRequest',
    refuseEarly(() => false),
  )
  await admin.register(adminRoute, {
    metrics,
    tokens,
    isDraining: () => draining,
    requestShutdown: () => deps.onShutdownRequest?.(),
  })

  guardServer(media.server)
  guardServer(admin.server)
  await Promise.all([media.ready(), admin.ready()])
  // Sign the first token now: a broken key shows at start-up, and /readyz turns 200 at once.
  await tokens.get().catch(() => undefined)

  const keyWatcher = config.privateKeyPath
    ? new KeyWatcher({
        path: config.privateKeyPath,
        initialKey: config.privateKey,
        pollIntervalMs: deps.keyPollIntervalMs,
        onKey: (key) => {
          signer.setKey(key)
          // Replace the cached token now, not at its refresh time: the old key may be revoked.
          tokens.invalidate()
          tokens.get().catch(() => undefined)
          metrics.countKeyReload('success')
          logger.info({ path: config.privateKeyPath }, 'private key reloaded')
        },
        onRejected: (reason) => {
          metrics.countKeyReload('failure')
          logger.error({ path: config.privateKeyPath, reason }, 'private key replacement refused; keeping the old key')
        },
      })
    : undefined
  keyWatcher?.start()

  let closing: Promise<void> | undefined
  return {
    media,
    admin,
    tokens,
    signer,
    metrics,
    inFlight,
    logger,
    get draining() {
      return draining
    },
    flushLogs: () => stdout?.flush(),
    async listen() {
      const mediaUrl = await media.listen({ host: config.host, port: config.port })
      const adminUrl = await admin.listen({ host: config.host, port: config.adminPort })
      return { mediaUrl, adminUrl }
    },
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        draining = true
        const mediaClosed = media.close()
        const timer = setTimeout(() => media.server.closeAllConnections(), graceMs)
        await mediaClosed
        // The server closes as soon as its sockets are destroyed, a moment before their 'close'
        // events end the requests on them (and write their access-log lines).
        await Promise.race([inFlight.whenIdle(), sleep(REQUEST_END_WAIT_MS, undefined, { ref: false })])
        clearTimeout(timer)
        keyWatcher?.close()
        tokens.close()
        await admin.close()
        stdout?.close()
      })()
      return closing
    },
  }
}

function serverOptions(logger: Logger) {
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
    clientErrorHandler: answerClientError,
    frameworkErrors: (error: Error, request: FastifyRequest, reply: FastifyReply) => {
      // Bad URLs and the like: no onRequest hook has run.
      setResponseBasics(request, reply)
      return sendProblem(reply, toProxyError(error))
    },
  }
}

/**
 * Answers that need no route, after the request is logged: an HTTP/1.1 request without Host
 * (RFC 9112 requires a 400), and, while draining, a request on a connection that was already
 * open (Fastify's return503OnClosing would answer plain JSON, unlogged). Both close the
 * connection.
 */
function refuseEarly(isDraining: () => boolean) {
  return (request: FastifyRequest, reply: FastifyReply, done: () => void): void => {
    const missingHost = request.raw.httpVersion === '1.1' && request.headers.host === undefined
    if (!missingHost && !isDraining()) {
      done()
      return
    }
    reply.header('x-request-id', request.id).header('connection', 'close')
    sendProblem(reply, missingHost ? errors.badRequest() : errors.shuttingDown())
  }
}

/** The basic headers (see headers.ts), on every response that goes through reply. */
function setResponseBasics(request: FastifyRequest, reply: FastifyReply): void {
  reply.headers(responseBasics(request))
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
