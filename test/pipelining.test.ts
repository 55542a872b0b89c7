// Proves pipelined requests on one connection go upstream one at a time, as their turn comes:
// a client that pipelines many and reads none causes one upstream request, not one per request,
// holds one in-flight slot, not one per request, and costs one 'close' listener on its socket.
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { MEDIA_ID, startEmulator, startProxy, waitFor, waitForStall } from './helpers.js'

const SIZE = 16 * 1024 * 1024
const PIPELINED = 20

/** A connection that sends `count` pipelined GETs for the media and reads nothing. */
async function pipelineAndStall(t: TestContext, mediaUrl: string, count: number): Promise<Socket> {
  const { hostname, port } = new URL(mediaUrl)
  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  socket.write(`GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`.repeat(count))
  socket.pause()
  return socket
}

test('20 pipelined requests from a client that stops reading send one request upstream; reading again gets all 20', {
  timeout: 60_000,
}, async (t) => {
  const warnings: Error[] = []
  const onWarning = (warning: Error) => warnings.push(warning)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url)
  const serverSockets: Socket[] = []
  proxy.app.media.server.on('connection', (socket: Socket) => serverSockets.push(socket))
  const socket = await pipelineAndStall(t, proxy.mediaUrl, PIPELINED)

  // The first response stalls on the client; the others wait their turn, not upstream.
  const first = await waitFor(() => emulator.requests[0], 'the first upstream request')
  await waitForStall(first, 'the first response to stall')
  assert.equal(emulator.requests.length, 1, 'requests sent upstream while the client reads nothing')
  assert.equal(proxy.app.inFlight.count, 1, 'in-flight slots held by one pipelining connection')
  const serverSocket = serverSockets[0] as Socket
  // Node's own listeners, plus one of ours, however deep the pipeline.
  assert.ok(serverSocket.listenerCount('close') <= 3, `${serverSocket.listenerCount('close')} close listeners`)

  // Reading again: every response arrives whole, each after the one before.
  let received = 0
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length
  })
  socket.resume()
  await waitFor(() => received >= PIPELINED * SIZE, `${PIPELINED} bodies of ${SIZE} bytes`, 40_000)
  assert.equal(emulator.requests.length, PIPELINED)
  await waitFor(() => proxy.app.inFlight.count === 0, 'every request to end')
  assert.deepEqual(warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning').map(String), [])
})

test('one client pipelining 8 downloads and reading none cannot starve another (MAX_IN_FLIGHT_REQUESTS=4)', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url, { MAX_IN_FLIGHT_REQUESTS: '4' })
  await pipelineAndStall(t, proxy.mediaUrl, 8)
  const first = await waitFor(() => emulator.requests[0], 'the first upstream request')
  await waitForStall(first, 'the first response to stall')

  for (let i = 0; i < 3; i++) {
    const res = await request(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, { headers: { range: 'bytes=0-1023' } })
    const body = Buffer.from(await res.body.arrayBuffer())
    assert.equal(res.statusCode, 206, 'another client is served')
    assert.equal(body.length, 1024)
  }
  assert.equal(proxy.app.inFlight.count, 1)
})
