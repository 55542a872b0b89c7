// Proves that a client going away, before or after the upstream answered, aborts the upstream request at once and leaves nothing in flight.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import { accessLines, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }

test('a client gone before the upstream headers: the upstream request is aborted, in-flight returns to 0', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1_024)
  emulator.faults.push({ headersDelayMs: 10_000 })
  const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })

  const client = new AbortController()
  const pending = request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { signal: client.signal })
  const record = await waitFor(() => emulator.requests[0], 'the request reaches the emulator')
  assert.equal(proxy.app.inFlight.count, 1)
  client.abort()
  await assert.rejects(pending, { name: 'AbortError' })

  // Promptly: long before the emulator's 10 s delay would have answered.
  await waitFor(() => record.closed, 'the emulator sees its request closed', 1_000)
  assert.equal(record.aborted, true)
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight returns to 0', 1_000)
  const line = await waitFor(() => accessLines(proxy)[0], 'the access log line', 1_000)
  assert.equal(line.aborted, true)
  assert.equal(emulator.requests.length, 1, 'an abort is not retried')
})

test('a 256 MiB download interrupted by the client: no upstream request left open within 1 s', async (t) => {
  const emulator = await startEmulator(t)
  const size = 256 * 1024 * 1024
  emulator.media.addSynthetic(MEDIA_ID, size)
  const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })

  const client = new AbortController()
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { signal: client.signal })
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-length'], String(size))
  let received = 0
  const reading = (async () => {
    for await (const chunk of res.body) {
      received += (chunk as Buffer).length
      if (received >= 4 * 1024 * 1024) client.abort()
    }
  })()
  await assert.rejects(reading, { name: 'AbortError' })
  assert.ok(received >= 4 * 1024 * 1024 && received < size, `received ${received} bytes`)

  await waitFor(() => emulator.openResponses === 0, 'no upstream response left open', 1_000)
  assert.equal(emulator.requests.length, 1)
  assert.equal(emulator.requests[0]?.aborted, true)
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight returns to 0', 1_000)
  const line = await waitFor(() => accessLines(proxy)[0], 'the access log line', 1_000)
  assert.equal(line.aborted, true)
  assert.ok((line.bytes as number) < size)
})

test('a client that pipelines two requests and leaves mid-body: both end, in-flight returns to 0', async (t) => {
  const emulator = await startEmulator(t)
  const big = '00000000-0000-4000-8000-0000000b16b0'
  emulator.media.addSynthetic(big, 64 * 1024 * 1024)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)

  // The second response is queued behind the first, which the client never finishes reading.
  const socket = connect(Number(port), hostname)
  socket.write(
    `GET /media/${big} HTTP/1.1\r\nHost: proxy\r\n\r\nGET /media/${MEDIA_ID} HTTP/1.1\r\nHost: proxy\r\n\r\n`,
  )
  await once(socket, 'data')
  socket.pause()
  await waitFor(() => emulator.requests.length === 1, 'the first request to reach the emulator')
  socket.destroy()

  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight back to 0', 2_000)
  await waitFor(() => emulator.openResponses === 0, 'no upstream response left open', 2_000)
  const lines = await waitFor(() => (accessLines(proxy).length === 2 ? accessLines(proxy) : undefined), 'two lines')
  assert.deepEqual(
    lines.map((line) => line.aborted),
    [true, true],
  )
  assert.equal(emulator.requests.length, 1, 'the queued request never went upstream (its turn never came)')
})
