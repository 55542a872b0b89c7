// Proves Connection: close responses never crash the proxy, whatever their framing, and are
// paused for a slow client like any other. undici 7 threw an uncatchable AssertionError when a
// paused, non-keep-alive response's connection ended (nodejs/undici#5360), so the relay used to
// leave such bodies unpaused; undici 8 fixed it, and these tests hold it to that.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import { test } from 'node:test'
import { loadConfig } from '../src/config.js'
import { TokenCache, TokenSigner } from '../src/credentials/token-cache.js'
import { syntheticStream } from '../src/emulator/media-store.js'
import type { ProxyError } from '../src/errors.js'
import { type Exchange, type ResponseSink, UpstreamClient, type UpstreamRequest } from '../src/relay/upstream.js'
import {
  APPLICATION_ID,
  accessLines,
  keys,
  MEDIA_ID,
  pausedDownload,
  proxyEnv,
  startEmulator,
  startProxy,
  waitFor,
  waitForStall,
} from './helpers.js'

const SIZE = 8 * 1024 * 1024

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
    emulator.media.addSynthetic(MEDIA_ID, SIZE)
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
    assert.equal(response.headers['content-length'], framing === 'Content-Length' ? String(SIZE) : undefined)
    const received = await sha256Of(response, 2)
    assert.equal(received.bytes, SIZE)
    assert.equal(received.digest, (await sha256Of(syntheticStream(0, SIZE - 1))).digest)
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
  start(status: number): boolean {
    this.status = status
    return true
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
    const tokens = new TokenCache(new TokenSigner(keys.privateKey, APPLICATION_ID, config.jwtTtlSeconds), {
      ttlSeconds: config.jwtTtlSeconds,
      proactive: false,
    })
    const client = new UpstreamClient(config, tokens)
    t.after(() => client.close())
    const origin = new URL(emulator.url)
    const request: UpstreamRequest = {
      applicationId: APPLICATION_ID,
      origin: origin.origin,
      host: origin.hostname,
      path: `/v3/media/${MEDIA_ID}`,
      method: 'GET',
      headers: [],
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

test('a keep-alive upstream that closes right after the last byte: a relay that pauses after every chunk ends cleanly', async (t) => {
  // undici 8 reports "other side closed" when a paused keep-alive response's connection ends,
  // even with its body complete: the relay never pauses on a body's last bytes.
  const size = 1024 * 1024
  const sockets = new Set<net.Socket>()
  const upstream = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('data', () => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`)
      socket.end(Buffer.alloc(size, 0x61))
    })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    upstream.close()
  })
  const config = loadConfig({ env: proxyEnv(`http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`) })
  const tokens = new TokenCache(new TokenSigner(keys.privateKey, APPLICATION_ID, config.jwtTtlSeconds), {
    ttlSeconds: config.jwtTtlSeconds,
    proactive: false,
  })
  const client = new UpstreamClient(config, tokens)
  t.after(() => client.close())
  for (let i = 0; i < 5; i++) {
    const sink = new PausingSink()
    const origin = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`
    sink.exchange = client.send(
      {
        applicationId: APPLICATION_ID,
        origin,
        host: '127.0.0.1',
        path: `/v3/media/${MEDIA_ID}`,
        method: 'GET',
        headers: [],
      },
      sink,
    )
    assert.equal(await sink.outcome, 'end', `attempt ${i}`)
    assert.equal(sink.bytes, size)
  }
})

for (const framing of ['Content-Length', 'chunked', 'close-delimited'] as const) {
  test(`a ${framing} body sent with Connection: close to a client that stops reading stalls the upstream (undici 8 pauses every body)`, async (t) => {
    const emulator = await startEmulator(t)
    const size = 256 * 1024 * 1024
    emulator.media.addSynthetic(MEDIA_ID, size)
    emulator.faults.push({
      closeConnection: true,
      chunked: framing === 'chunked',
      closeDelimited: framing === 'close-delimited',
    })
    const proxy = await startProxy(t, emulator.url)

    const response = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    t.after(() => response.destroy())
    assert.equal(response.statusCode, 200)
    const upstream = await waitFor(() => emulator.requests[0], 'the upstream request')
    await waitForStall(upstream, 'the upstream to be held back by the stalled client')
    assert.ok(
      upstream.bodyBytes < 16 * 1024 * 1024,
      `${upstream.bodyBytes} bytes taken from Vonage for a client that read none`,
    )
    assert.equal(upstream.closed, false, 'the download is held, not cut')
  })
}

for (const framing of ['Content-Length', 'chunked'] as const) {
  test(`Vonage closing a Connection: close response mid-body while the relay waits for a slow client cuts that response, not the process (${framing})`, async (t) => {
    // A raw upstream: it trickles the body until the proxy's response to a client that is not
    // reading has backed up, then ends the connection (FIN) with the body incomplete.
    let clientResponse: http.ServerResponse | undefined
    let backedUp = false
    const sockets = new Set<net.Socket>()
    const upstream = net.createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.once('data', async () => {
        socket.write(
          framing === 'chunked'
            ? 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4000000\r\n'
            : 'HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\nConnection: close\r\n\r\n',
        )
        const piece = Buffer.alloc(32 * 1024, 0x61)
        for (let i = 0; i < 2_000 && !socket.destroyed; i++) {
          socket.write(piece)
          await new Promise((resolve) => setTimeout(resolve, 2))
          if ((clientResponse?.writableLength ?? 0) > 64 * 1024) {
            backedUp = true
            break
          }
        }
        socket.end()
      })
    })
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    t.after(() => {
      for (const socket of sockets) socket.destroy()
      upstream.close()
    })
    const { port } = upstream.address() as net.AddressInfo
    const proxy = await startProxy(t, `http://127.0.0.1:${port}`)
    proxy.app.media.server.prependListener('request', (_req, res) => {
      clientResponse = res
    })

    const response = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    t.after(() => response.destroy())
    assert.equal(response.statusCode, 200)
    const line = await waitFor(() => accessLines(proxy)[0], 'the cut response to be logged', 10_000)
    assert.equal(backedUp, true, 'the relay had to wait for the client')
    assert.equal(line.aborted, true)
    assert.equal(proxy.app.inFlight.count, 0)
  })
}
