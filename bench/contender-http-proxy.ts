// Contender "http-proxy": what the design named and the first version of the proxy used
// (commit 4ec3635, src/media-route.ts), Fastify + @fastify/http-proxy registered as tightly as
// it was there: one route, GET/HEAD /media/:id -> /v3/media/:id, a bad id rejected before any
// I/O, the query string dropped, request and response headers allowlisted, TLS verified, one
// upstream connection per request (pipelining 1, kept alive), no 503 retry loop. It differs
// from that version only where the benchmark isolates the relay: a static token (nginx's too)
// instead of the token cache, no client keys, in-flight limit, request ids, logging or metrics.
// reply-from creates its own undici Agent (its nested undici 7) from the options below.
// usage: CONTENDER_TOKEN=<jwt> node --import tsx bench/contender-http-proxy.ts <upstream-url> <port>
import type { IncomingHttpHeaders } from 'node:http'
import httpProxy from '@fastify/http-proxy'
import Fastify from 'fastify'
import {
  BAD_ID_BODY,
  contenderConfig,
  FORWARDED_REQUEST_HEADERS,
  HOST,
  MEDIA_ID,
  PASSED_BACK_RESPONSE_HEADERS,
} from './contender-config.js'

const config = contenderConfig('contender-http-proxy.ts')

const app = Fastify({ logger: false })

await app.register(httpProxy, {
  upstream: config.upstream,
  prefix: '/media',
  rewritePrefix: '/v3/media',
  routes: ['/:id'],
  httpMethods: ['GET', 'HEAD'],
  disableRequestLogging: true,
  // reply-from's defaults turn certificate checks off (tls.rejectUnauthorized); connect's wins.
  undici: { connect: { rejectUnauthorized: true }, pipelining: 1 },
  preValidation: (request, reply, done) => {
    if (!MEDIA_ID.test((request.params as { id: string }).id)) {
      reply.code(400).header('content-type', 'application/problem+json').send(BAD_ID_BODY)
      return
    }
    done()
  },
  replyOptions: {
    queryString: () => '',
    // retriesCount > 0 switches off reply-from's default of retrying a 503 up to ten times;
    // one retry of a connection reset on a kept-alive socket remains.
    retriesCount: 1,
    rewriteRequestHeaders: (request) => {
      const incoming = request.headers
      const headers: IncomingHttpHeaders = { authorization: config.authorization }
      for (const name of FORWARDED_REQUEST_HEADERS) {
        const value = incoming[name]
        if (typeof value === 'string') headers[name] = value
      }
      return headers
    },
    rewriteHeaders: (upstream) => {
      const headers: IncomingHttpHeaders = {}
      for (const name of PASSED_BACK_RESPONSE_HEADERS) {
        const value = (upstream as IncomingHttpHeaders)[name]
        if (value !== undefined) headers[name] = value
      }
      return headers
    },
  },
})

await app.listen({ host: HOST, port: config.port })
process.once('SIGTERM', () => {
  void app.close().finally(() => process.exit(0))
})
