// The admin port: metrics and health for the platform, never media. /readyz only looks at the
// token cache and the drain flag; it never dials Vonage. It keeps answering while the media
// port drains: /readyz must say 503 then, and /metrics stays up.
import Fastify, { type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { isLoopback } from '../config.js'
import type { Applications } from '../credentials/applications.js'
import type { TokenCache } from '../credentials/token-cache.js'
import { errors, ProxyError, sendProblem } from '../errors.js'
import { prepareServer, refuseEarly, serverOptions } from '../http-servers.js'
import { EarlyRefusals } from '../relay/client-errors.js'
import type { Metrics } from './metrics.js'

export interface AdminServerOptions {
  logger: Logger
  metrics: Metrics
  tokens: TokenCache
  applications: Applications
  isDraining: () => boolean
  /** POST /quitquitquit: answer 202, then shut down as on SIGTERM. */
  requestShutdown: () => void
}

export async function createAdminServer(options: AdminServerOptions): Promise<FastifyInstance> {
  const { metrics, tokens, applications, isDraining, requestShutdown } = options
  const refusals = new EarlyRefusals()
  const app = Fastify(serverOptions(options.logger, refusals))
  prepareServer(app, refusals)
  app.addHook('onRequest', (request, reply, done) => {
    if (!refuseEarly(request, reply, false)) done()
  })

  app.get('/metrics', async (request, reply) => {
    const { contentType, body } = await metrics.exposition(request.headers.accept)
    reply.header('vary', 'Accept')
    return reply.type(contentType).send(body)
  })

  app.get('/healthz', async (_request, reply) => reply.type('text/plain').send('ok\n'))

  app.get('/readyz', async (_request, reply) => {
    if (isDraining()) return sendProblem(reply, errors.shuttingDown())
    // The default application's token; with several applications and no default, a key at all.
    // Never a signature: a thousand applications do not mean a thousand tokens to be ready.
    const ready = tokens.defaultApplicationId === undefined ? applications.size > 0 : tokens.peek() !== undefined
    if (!ready) return sendProblem(reply, errors.tokenUnavailable())
    return reply.type('text/plain').send('ready\n')
  })

  app.post('/quitquitquit', async (request, reply) => {
    // The admin port listens beyond the pod for probes and scrapes; only the pod may stop it.
    if (!isLoopback(request.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '')) {
      return sendProblem(
        reply,
        new ProxyError('forbidden', 403, 'Forbidden', '/quitquitquit is only accepted from a loopback address.'),
      )
    }
    reply.raw.once('finish', requestShutdown)
    return reply.code(202).type('text/plain').send('shutting down\n')
  })

  app.setNotFoundHandler((_request, reply) =>
    sendProblem(
      reply,
      new ProxyError(
        'not-found',
        404,
        'Not Found',
        'The admin port serves /metrics, /healthz, /readyz and /quitquitquit.',
      ),
    ),
  )
  await app.ready()
  return app
}
