// Proves a slow client can read a body Vonage sends with Connection: close to the end, whatever
// its framing, without crashing the proxy: undici 7 throws an uncatchable AssertionError when a
// paused response's connection ends (nodejs/undici#5360), so the relay never pauses on a body's
// last bytes, nor on a body only the close can end.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { test } from 'node:test'
import { loadConfig } from '../src/config.js'
import { syntheticStream } from '../src/emulator/media-store.js'
import type { ProxyError } from '../src/errors.js'
import { TokenCache, TokenSigner } from '../src/token-cache.js'
import { type Exchange, type ResponseSink, UpstreamClient, type UpstreamRequest } from '../src/upstream.js'
import { accessLines, MEDIA_ID, pausedDownload, proxyEnv, startEmulator, startProxy, waitFor } from './helpers.js'

const SIZE = 32 * 1024 * 1024

async function sha256Of(stream: AsyncIterable<Buffer>, pauseMs = 0): Promise<{ digest: string; bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    hash.update(chunk)
    bytes += chunk.length
    // A slow reader: the proxy's socket to it backs up, so the relay pauses the upstream.
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
  }
  return { digest: hash.digest('hex'), bytes }
}

for (const framing of ['Content-Length', 'chunked', 'close-delimited'] as const) {
  test(`a slow client reads a ${framing} body sent with Connection: close to the end`, async (t) => {
    const emulator = await startEmulator(t)
    // A body only the close can end is never paused: it must fit the 16 MiB the proxy queues.
    const size = framing === 'close-delimited' ? SIZE / 4 : SIZE
    emulator.media.addSynthetic(MEDIA_ID, size)
    emulator.faults.push({
      closeConnection: true,
      chunked: framing === 'chunked',
      closeDelimited: framing === 'close-delimited',
    })
    const proxy = await startProxy(t, emulator.url)

    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, resolve).once('error', reject)
    })
    assert.equal(response.statusCode, 200)
    assert.equal(response.headers['content-length'], framing === 'Content-Length' ? String(size) : undefined)
    const received = await sha256Of(response, 2)
    assert.equal(received.bytes, size)
    assert.equal(received.digest, (await sha256Of(syntheticStream(0, size - 1))).digest)
    const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
    assert.equal(upstream.closed, true)
    await waitFor(() => proxy.app.inFlight.count === 0, 'the request to end')
  })
}

/** The worst client: asks for a pause after every chunk, and resumes a moment later. */
class PausingSink implements ResponseSink {
  exchange: Exchange | undefined
  readonly hash = createHash('sha256')
  bytes = 0
  pauses = 0
  status: number | undefined
  outcome: Promise<string>
  #settle: (value: string) => void = () => {}
  constructor() {
    this.outcome = new Promise((resolve) => {
      this.#settle = resolve
    })
  }
  start(status: number): void {
    this.status = status
  }
  data(chunk: Buffer): boolean {
    this.hash.update(chunk)
    this.bytes += chunk.length
    this.pauses++
    setImmediate(() => this.exchange?.resume())
    return false
  }
  end(): void {
    this.#settle('end')
  }
  fail(problem: ProxyError): void {
    this.#settle(`fail: ${problem.code}`)
  }
  abort(error: Error): void {
    this.#settle(`abort: ${error.message}`)
  }
}

for (const framing of ['Content-Length', 'chunked', 'close-delimited'] as const) {
  test(`a relay that pauses after every chunk of a ${framing} body sent with Connection: close ends cleanly`, async (t) => {
    const emulator = await startEmulator(t)
    const size = 4 * 1024 * 1024
    emulator.media.addSynthetic(MEDIA_ID, size)
    emulator.faults.push({
      closeConnection: true,
      chunked: framing === 'chunked',
      closeDelimited: framing === 'close-delimited',
    })
    const config = loadConfig({ env: proxyEnv(emulator.url) })
    const tokens = new TokenCache(new TokenSigner(config.privateKey, config.applicationId, config.jwtTtlSeconds), {
      ttlSeconds: config.jwtTtlSeconds,
      proactive: false,
    })
    const client = new UpstreamClient(config, tokens)
    t.after(() => client.close())
    const request: UpstreamRequest = {
      path: `/v3/media/${MEDIA_ID}`,
      method: 'GET',
      headers: [],
      token: await tokens.get(),
      retries: 0,
      upstreamStatus: undefined,
      upstreamMs: undefined,
    }
    const sink = new PausingSink()
    sink.exchange = client.send(request, sink)

    assert.equal(await sink.outcome, 'end')
    assert.equal(sink.status, 200)
    assert.equal(sink.bytes, size)
    assert.ok(sink.pauses > 1, 'the sink asked for pauses (granted where safe)')
    assert.equal(sink.hash.digest('hex'), (await sha256Of(syntheticStream(0, size - 1))).digest)
  })
}

test('a close-delimited body to a client that stops reading is cut once 16 MiB wait for it, not held whole', async (t) => {
  const emulator = await startEmulator(t)
  const size = 256 * 1024 * 1024
  emulator.media.addSynthetic(MEDIA_ID, size)
  emulator.faults.push({ closeDelimited: true })
  const proxy = await startProxy(t, emulator.url)

  const response = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  t.after(() => response.destroy())
  assert.equal(response.statusCode, 200)

  const line = await waitFor(() => accessLines(proxy)[0], 'the request to be cut and logged', 20_000)
  assert.equal(line.aborted, true)
  assert.ok(Number(line.bytes) < size / 4, `${line.bytes} bytes taken from Vonage for a client that read none`)
  assert.ok(proxy.logs.some((entry) => entry.msg === 'media response cut short'))
  const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
  await waitFor(() => upstream.closed, 'the upstream request to be cancelled')
  assert.equal(upstream.aborted, true)
})
