// Proves the relay survives upstreams that break the rules, and never passes off a cut body as a
// complete one: an HTTP/1.0 upstream that closes or resets mid-body while the relay waits for a
// slow client (undici 7 crashed the process there; undici 8 fixed it, and this holds it to
// that), a close-delimited body that ends in a reset, an HTTP/1.0 client whose body is cut, and
// a 503 whose body never comes.
import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import { accessLines, MEDIA_ID, pausedDownload, startProxy, startRawUpstream, waitFor } from './helpers.js'

const BIG = 16 * 1024 * 1024

/** Reads what is left of a response; resolves with the bytes and whether it ended properly. */
function drain(res: IncomingMessage): Promise<{ bytes: number; complete: boolean }> {
  return new Promise((resolve) => {
    let bytes = 0
    res.on('data', (chunk: Buffer) => {
      bytes += chunk.length
    })
    res.once('error', () => {})
    res.once('close', () => resolve({ bytes, complete: res.complete }))
    res.resume()
  })
}

for (const ending of ['FIN', 'reset'] as const) {
  test(`an HTTP/1.0 upstream that ends a Content-Length body with a ${ending} while the relay waits for a slow client: that download is cut, the process serves on`, async (t) => {
    const upstream = await startRawUpstream(t, (socket, _head, index) => {
      if (index > 0) {
        socket.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok')
        return
      }
      socket.write(`HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: ${BIG}\r\n\r\n`)
      // Half the body, more than the socket buffers hold: the relay has to pause for the client.
      socket.write(Buffer.alloc(BIG / 2, 0x61), () => {
        setTimeout(() => (ending === 'FIN' ? socket.end() : socket.resetAndDestroy()), 300)
      })
    })
    const proxy = await startProxy(t, upstream)
    const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    assert.equal(res.statusCode, 200)
    await new Promise((resolve) => setTimeout(resolve, 600))
    const received = await drain(res)
    assert.equal(received.complete, false, 'a cut body never looks complete')
    assert.ok(received.bytes < BIG)
    const line = await waitFor(() => accessLines(proxy)[0], 'the access line')
    assert.equal(line.aborted, true)

    const next = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    assert.equal(next.statusCode, 200)
    assert.equal(await next.body.text(), 'ok')
  })
}

for (const version of ['1.1', '1.0'] as const) {
  test(`a close-delimited body (HTTP/${version}) that ends in a reset is relayed as cut, not as complete`, async (t) => {
    const size = 1024 * 1024
    const upstream = await startRawUpstream(t, (socket) => {
      const connection = version === '1.1' ? 'Connection: close\r\n' : ''
      socket.write(`HTTP/${version} 200 OK\r\nContent-Type: video/mp4\r\n${connection}\r\n`)
      socket.write(Buffer.alloc(size, 0x62), () => setTimeout(() => socket.resetAndDestroy(), 100))
    })
    const proxy = await startProxy(t, upstream)
    const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    assert.equal(res.statusCode, 200)
    const received = await drain(res)
    assert.equal(received.complete, false, `the client got ${received.bytes} bytes and a proper end`)
    const line = await waitFor(() => accessLines(proxy)[0], 'the access line')
    assert.equal(line.aborted, true)
  })

  test(`a close-delimited body (HTTP/${version}) that ends in a FIN is complete`, async (t) => {
    const size = 1024 * 1024
    const upstream = await startRawUpstream(t, (socket) => {
      const connection = version === '1.1' ? 'Connection: close\r\n' : ''
      socket.write(`HTTP/${version} 200 OK\r\nContent-Type: video/mp4\r\n${connection}\r\n`)
      socket.end(Buffer.alloc(size, 0x62))
    })
    const proxy = await startProxy(t, upstream)
    const res = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    const received = await drain(res)
    assert.deepEqual(received, { bytes: size, complete: true })
    const line = await waitFor(() => accessLines(proxy)[0], 'the access line')
    assert.equal(line.aborted, false)
    assert.equal(line.bytes, size)
  })
}

test('an HTTP/1.0 client whose body is cut mid-way sees a reset, not a clean close', async (t) => {
  const upstream = await startRawUpstream(t, (socket) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nTransfer-Encoding: chunked\r\n\r\n')
    socket.write(`10000\r\n${'c'.repeat(0x10000)}\r\n`, () => setTimeout(() => socket.destroy(), 100))
  })
  const proxy = await startProxy(t, upstream)
  const { hostname, port } = new URL(proxy.mediaUrl)
  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  socket.write(`GET /media/${MEDIA_ID} HTTP/1.0\r\n\r\n`)
  let received = ''
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1')
  })
  const ending = await new Promise<string>((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    socket.once('end', () => resolve('clean end'))
  })
  assert.match(received, /^HTTP\/1\.1 200 /)
  assert.doesNotMatch(received.slice(0, received.indexOf('\r\n\r\n')), /content-length/i)
  assert.equal(ending, 'ECONNRESET')
})

test('a 503 whose body never comes is dropped at once and retried, not waited for', async (t) => {
  const upstream = await startRawUpstream(t, (socket, _head, index) => {
    if (index === 0) {
      // Headers promise a body that never comes; the connection stays open.
      socket.write(
        'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nContent-Length: 100\r\n\r\n',
      )
      return
    }
    socket.write('HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5\r\n\r\nhello')
  })
  const proxy = await startProxy(t, upstream, { UPSTREAM_BODY_TIMEOUT_MS: '20000' })
  const started = performance.now()
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 200)
  assert.equal(await res.body.text(), 'hello')
  assert.ok(performance.now() - started < 3_000, `took ${Math.round(performance.now() - started)} ms`)
  const line = await waitFor(() => accessLines(proxy)[0], 'the access line')
  assert.equal(line.retries, 1)
})
