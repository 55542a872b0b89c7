// A static stand-in for Vonage's Media API, run as its own process when nginx is not installed:
// serves GET/HEAD /v3/media/<id> from memory and verifies NO token, so that a benchmark measures
// the proxy's own cost, not the RS256 verification the emulator does on every request.
// usage: node --import tsx bench/static-origin.ts <media-root> <port>

import { readdirSync, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'

const [root, port] = process.argv.slice(2)
if (!root || !port) {
  process.stderr.write('usage: static-origin.ts <media-root> <port>\n')
  process.exit(64)
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

const server = createServer((req, res) => {
  const body = req.method === 'GET' || req.method === 'HEAD' ? bodies.get(req.url ?? '') : undefined
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
})
// Longer than undici's and nginx's upstream keep-alive, so the origin never closes first.
server.keepAliveTimeout = 65_000
server.listen(Number(port), '127.0.0.1')
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections())
