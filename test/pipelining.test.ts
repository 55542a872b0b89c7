// Proves pipelined requests on one connection go upstream one at a time, as their turn comes:
// a client that pipelines many and reads none causes one upstream request, not one per request.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { MEDIA_ID, startEmulator, startProxy, waitFor, waitForStall } from './helpers.js'

const SIZE = 16 * 1024 * 1024
const PIPELINED = 20

test('20 pipelined requests from a client that stops reading send one request upstream; reading again gets all 20', {
  timeout: 60_000,
}, async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)

  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  const request = `GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`
  socket.write(request.repeat(PIPELINED))
  socket.pause()

  // The first response stalls on the client; the others wait their turn, not upstream.
  const first = await waitFor(() => emulator.requests[0], 'the first upstream request')
  await waitForStall(first, 'the first response to stall')
  assert.equal(emulator.requests.length, 1, 'requests sent upstream while the client reads nothing')

  // Reading again: every response arrives whole, each after the one before.
  let received = 0
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length
  })
  socket.resume()
  await waitFor(() => received >= PIPELINED * SIZE, `${PIPELINED} bodies of ${SIZE} bytes`, 40_000)
  assert.equal(emulator.requests.length, PIPELINED)
  await waitFor(() => proxy.app.inFlight.count === 0, 'every request to end')
})
