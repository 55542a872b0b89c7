// Contender "undici-stream": the shortest relay Node and undici offer, node:http + undici 8's
// Agent.stream() writing the upstream body straight into the ServerResponse (undici pauses the
// upstream whenever the response's buffer is full). GET/HEAD /media/:id -> /v3/media/:id with a
// bad id rejected before any I/O, the query string dropped, the proxy's header allowlists both
// ways, a static token, TLS verified, one request per upstream connection at a time (pipelining
// 1, kept alive). No retries, request ids, logging or metrics.
// usage: CONTENDER_TOKEN=<jwt> node --import tsx bench/contender-undici-stream.ts <upstream-url> <port>
import { createServer } from 'node:http'
import { Agent } from 'undici'
import {
  BAD_ID_BODY,
  contenderConfig,
  FORWARDED_REQUEST_HEADERS,
  HOST,
  MEDIA_ID,
  PASSED_BACK_RESPONSE_HEADERS,
} from './contender-config.js'

const config = contenderConfig('contender-undici-stream.ts')
const agent = new Agent({ connect: { rejectUnauthorized: true }, pipelining: 1 })
const PREFIX = '/media/'

const server = createServer((req, res) => {
  const method = req.method
  if (method !== 'GET' && method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 }).end()
    return
  }
  const url = req.url ?? ''
  const query = url.indexOf('?')
  const path = query === -1 ? url : url.slice(0, query)
  if (!path.startsWith(PREFIX)) {
    res.writeHead(404, { 'content-length': 0 }).end()
    return
  }
  const id = path.slice(PREFIX.length)
  if (!MEDIA_ID.test(id)) {
    res.writeHead(400, { 'content-type': 'application/problem+json' }).end(BAD_ID_BODY)
    return
  }
  const headers: Record<string, string> = { authorization: config.authorization }
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = req.headers[name]
    if (typeof value === 'string') headers[name] = value
  }
  agent.stream(
    { origin: config.upstream, path: `/v3/media/${id}`, method, headers },
    ({ statusCode, headers: upstream }) => {
      const passed: Record<string, string | string[]> = {}
      for (const name of PASSED_BACK_RESPONSE_HEADERS) {
        const value = upstream[name]
        if (value !== undefined) passed[name] = value
      }
      res.writeHead(statusCode, passed)
      return res
    },
    (err) => {
      if (!err) return
      // Before the response started: a 502; after: cut the connection (the body is incomplete).
      if (!res.headersSent) res.writeHead(502, { 'content-length': 0 }).end()
      else res.destroy()
    },
  )
})
// As Fastify's default (the other two Node servers), longer than wrk's and undici's idle times.
server.keepAliveTimeout = 72_000
server.listen(config.port, HOST)
process.once('SIGTERM', () => {
  server.close(() => process.exit(0)).closeAllConnections()
  void agent.close()
})
