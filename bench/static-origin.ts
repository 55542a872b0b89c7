// A static stand-in for Vonage's Media API, run as its own process when nginx is not installed:
// serves GET/HEAD /v3/media/<id> from memory and verifies NO token, so that a benchmark measures
// the proxy's own cost, not the RS256 verification the emulator does on every request.
// With --close-delimited it answers every request with HTTP/1.1 200, `Connection: close`, and
// neither Content-Length nor chunked framing: the body ends when the connection closes (RFC 9112
// 6.3), which nginx as an origin cannot easily be made to do. Written on raw sockets (node:net)
// so that nothing adds framing; one request per connection.
// With --tls-cert and --tls-key it serves the same keep-alive responses over HTTPS (node:https),
// for the host-prefixed routes' measurement (bench/host-routes.ts).
// With --copies, /v3/media/<id> whose last group is a file's last group serves that file (a copy
// under a new id: bench/cache.ts); with --access-log, one line per request is appended to a file
// (nginx's access log, for counting what reached the origin).
// usage: node --import tsx bench/static-origin.ts <media-root> <port>
//          [--close-delimited | --tls-cert <cert.pem> --tls-key <key.pem>] [--copies] [--access-log <file>]

import { appendFileSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createNetServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const USAGE =
  'usage: static-origin.ts <media-root> <port> [--close-delimited | --tls-cert <file> --tls-key <file>] ' +
  '[--copies] [--access-log <file>]\n'
function usageError(): never {
  process.stderr.write(USAGE)
  process.exit(64)
}
const parsed = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      strict: true,
      options: {
        'close-delimited': { type: 'boolean', default: false },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        copies: { type: 'boolean', default: false },
        'access-log': { type: 'string' },
      },
    })
  } catch {
    return usageError()
  }
})()
const [root, port, ...extra] = parsed.positionals
const closeDelimitedMode = parsed.values['close-delimited']
const tlsCert = parsed.values['tls-cert']
const tlsKey = parsed.values['tls-key']
const copies = parsed.values.copies
const accessLog = parsed.values['access-log']
if (
  !root ||
  !port ||
  extra.length > 0 ||
  (tlsCert === undefined) !== (tlsKey === undefined) ||
  (closeDelimitedMode && tlsCert !== undefined)
) {
  usageError()
}

interface Body {
  data: Buffer
  etag: string
  lastModified: string
}

const dir = join(root, 'v3', 'media')
const bodies = new Map<string, Body>()
for (const name of readdirSync(dir)) {
  const path = join(dir, name)
  const stat = statSync(path)
  bodies.set(`/v3/media/${name}`, {
    data: readFileSync(path),
    etag: `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`,
    lastModified: stat.mtime.toUTCString(),
  })
}
/** A file's last id group: what a copy's id ends in. */
const LAST_GROUP = /^\/v3\/media\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-([0-9a-f]{12})$/
const byLastGroup = new Map<string, Body>()
for (const [path, body] of bodies) {
  const group = LAST_GROUP.exec(path)?.[1]
  if (group !== undefined) byLastGroup.set(group, body)
}

/** The body a GET or HEAD of this target gets (undefined: 404); logged first with --access-log. */
function bodyFor(method: string | undefined, target: string | undefined): Body | undefined {
  if (accessLog !== undefined) appendFileSync(accessLog, `${method} ${target}\n`)
  if (method !== 'GET' && method !== 'HEAD') return undefined
  const exact = bodies.get(target ?? '')
  if (exact || !copies) return exact
  const group = LAST_GROUP.exec(target ?? '')?.[1]
  return group === undefined ? undefined : byLastGroup.get(group)
}

/** The most of a request head read before giving up on it. */
const MAX_HEAD_BYTES = 16 * 1024

/** One request per connection: reads the head, writes status line, headers and body, then closes. */
function closeDelimited(socket: Socket): void {
  let head = ''
  socket.setEncoding('latin1')
  socket.on('error', () => socket.destroy())
  const onData = (text: string) => {
    head += text
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) {
      if (head.length > MAX_HEAD_BYTES) socket.destroy()
      return
    }
    socket.off('data', onData)
    socket.pause()
    const [method, target] = head.slice(0, head.indexOf('\r\n')).split(' ')
    const body = bodyFor(method, target)
    if (!body) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
      return
    }
    socket.write(
      'HTTP/1.1 200 OK\r\n' +
        'Content-Type: application/octet-stream\r\n' +
        `ETag: ${body.etag}\r\n` +
        `Last-Modified: ${body.lastModified}\r\n` +
        'Connection: close\r\n\r\n',
      'latin1',
    )
    // The whole body in one write: the socket keeps a reference (no copy) and sends it as the
    // peer reads; end() then closes the connection, which is what ends the body.
    if (method === 'HEAD') socket.end()
    else socket.end(body.data)
  }
  socket.on('data', onData)
}

function keepAlive(req: IncomingMessage, res: ServerResponse): void {
  const body = bodyFor(req.method, req.url)
  if (!body) {
    res.writeHead(404, { 'content-length': 0 }).end()
    return
  }
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': body.data.length,
    etag: body.etag,
    'last-modified': body.lastModified,
    'accept-ranges': 'bytes',
  })
  res.end(req.method === 'HEAD' ? undefined : body.data)
}

const server = closeDelimitedMode
  ? createNetServer(closeDelimited)
  : tlsCert !== undefined && tlsKey !== undefined
    ? createHttpsServer({ cert: readFileSync(tlsCert), key: readFileSync(tlsKey) }, keepAlive)
    : createServer(keepAlive)
// Longer than undici's and nginx's upstream keep-alive, so the origin never closes first.
if ('keepAliveTimeout' in server) server.keepAliveTimeout = 65_000
server.listen(Number(port), '127.0.0.1')
process.on('SIGTERM', () => {
  if (!('closeAllConnections' in server)) process.exit(0) // raw sockets: the exit closes them
  server.close(() => process.exit(0))
  server.closeAllConnections()
})
