// While draining, a new request on a connection that is still busy (so not closed as idle) gets
// a problem+json 503 with X-Request-Id and Connection: close, and is logged like any other.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { accessLines, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

interface Response {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/** Splits back-to-back HTTP/1.1 responses, each with a Content-Length. */
function parseResponses(data: Buffer): Response[] {
  const responses: Response[] = []
  let offset = 0
  while (offset < data.length) {
    const split = data.indexOf('\r\n\r\n', offset)
    if (split === -1) break
    const [statusLine = '', ...lines] = data.subarray(offset, split).toString('latin1').split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    responses.push({
      status: Number(statusLine.split(' ')[1]),
      headers,
      body: data.subarray(split + 4, split + 4 + length),
    })
    offset = split + 4 + length
  }
  return responses
}

test('a request on a busy keep-alive connection during the drain gets a logged problem+json 503', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)

  const socket = connect(Number(port), hostname)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const request = `GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: proxy\r\n\r\n`

  // The first request is held upstream, so the connection is busy when the drain starts.
  emulator.faults.push({ headersDelayMs: 500 })
  socket.write(request)
  await waitFor(() => emulator.requests.length === 1, 'the first request upstream')
  const closed = proxy.app.close(5_000)
  await waitFor(() => proxy.app.draining, 'the drain to start')
  socket.write(request)
  await ended
  await closed

  const [first, during] = parseResponses(Buffer.concat(chunks))
  assert.equal(first?.status, 200)
  assert.equal(first?.body.length, 1024)
  assert.equal(during?.status, 503)
  assert.equal(during?.headers['content-type'], 'application/problem+json')
  assert.equal(during?.headers.connection, 'close')
  const problem = JSON.parse(during?.body.toString('utf8') ?? '{}') as { status: number; requestId: string }
  assert.equal(problem.status, 503)
  assert.equal(problem.requestId, during?.headers['x-request-id'])
  assert.equal(emulator.requests.length, 1, 'nothing more went upstream')
  assert.ok(accessLines(proxy).some((line) => line.status === 503 && line.reqId === problem.requestId))
})

test('a keep-alive connection that goes idle during the drain is closed at once, not at the end of the grace period', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)

  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  socket.resume()
  const closedAt = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())))
  // Held upstream, so the connection is busy (not idle) when the drain starts.
  emulator.faults.push({ headersDelayMs: 300 })
  socket.write(`GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: proxy\r\n\r\n`)
  await waitFor(() => emulator.requests.length === 1, 'the request upstream')
  const started = performance.now()
  const closed = proxy.app.close(10_000)
  // The client keeps its pooled connection open after the response, as HTTP clients do.
  const closedAfter = (await closedAt) - started
  await closed
  assert.ok(closedAfter < 2_000, `closed ${Math.round(closedAfter)} ms into a 10 s grace period`)
  assert.equal(accessLines(proxy)[0]?.status, 200)
})
