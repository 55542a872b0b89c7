// The admin port: metrics and health for the platform, never media. /readyz only looks at
// the token cache and the drain flag; it never dials Vonage.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { errors, ProxyError, sendProblem } from './errors.js'
import type { Metrics } from './metrics.js'
import type { TokenCache } from './token-cache.js'

export interface AdminOptions {
  metrics: Metrics
  tokens: TokenCache
  isDraining: () => boolean
  /** POST /quitquitquit: answer 202, then shut down as on SIGTERM. */
  requestShutdown: () => void
}

async function adminRoutes(app: FastifyInstance, options: AdminOptions): Promise<void> {
  const { metrics, tokens, isDraining, requestShutdown } = options

  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await metrics.exposition()
    return reply.type(contentType).send(body)
  })

  app.get('/healthz', async (_request, reply) => reply.type('text/plain').send('ok\n'))

  app.get('/readyz', async (_request, reply) => {
    if (isDraining()) return sendProblem(reply, errors.shuttingDown())
    if (!tokens.peek()) return sendProblem(reply, errors.tokenUnavailable())
    return reply.type('text/plain').send('ready\n')
  })

  app.post('/quitquitquit', async (_request, reply) => {
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
}

export const adminRoute = fp(adminRoutes, { fastify: '5.x', name: 'admin-route' })
