// Proves a client that stops reading stops the proxy reading from Vonage: the upstream response
// stalls with most of the body unsent, reading again completes it intact, and a client that reads
// nothing for the send timeout is cut, its upstream request with it.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import { syntheticStream } from '../src/emulator/media-store.js'
import { accessLines, MEDIA_ID, pausedDownload, startEmulator, startProxy, waitFor, waitForStall } from './helpers.js'

const MiB = 1024 * 1024
const SIZE = 256 * MiB
/**
 * Kernel socket buffers (two connections, both directions, grown by autotuning) and the
 * proxy's own 64 KiB allowance hold far less than this; a proxy that ignored backpressure
 * would read the whole body into memory instead.
 */
const STALLED_BELOW = SIZE / 2

async function sha256Of(stream: AsyncIterable<Buffer>): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of stream) hash.update(chunk)
  return hash.digest('hex')
}

test('a client that stops reading stalls the upstream response; reading again completes it intact', {
  timeout: 60_000,
}, async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url)

  const response = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => response.destroy())
  assert.equal(response.statusCode, 200)

  const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
  await waitForStall(upstream, 'the upstream response to stall')
  assert.ok(upstream.bodyBytes < STALLED_BELOW, `${upstream.bodyBytes} of ${SIZE} bytes left Vonage while nobody read`)
  assert.equal(upstream.closed, false)

  const expected = sha256Of(syntheticStream(0, SIZE - 1))
  assert.equal(await sha256Of(response), await expected)
  assert.equal(upstream.bodyBytes, SIZE)
  await waitFor(() => proxy.app.inFlight.count === 0, 'the request to end')
})

test('a client that reads nothing for the send timeout is cut, and its upstream request with it', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url, {}, { sendTimeoutMs: 300 })

  const started = Date.now()
  const response = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => response.destroy())
  const line = await waitFor(() => accessLines(proxy)[0], 'the stalled response to be cut', 20_000)
  assert.equal(line.aborted, true)
  assert.ok(Date.now() - started >= 300, 'not before the send timeout')
  assert.ok(proxy.logs.some((entry) => entry.msg === 'media response cut short'))
  const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
  await waitFor(() => upstream.closed, 'the upstream request to be cancelled')
  assert.equal(upstream.aborted, true)
  assert.equal(proxy.app.inFlight.count, 0)
})
