// Proves requests refused before any route (the parser's 400 and 431, CONNECT's 405, an odd
// Expect's 417) are logged and counted like every other answer on the media port, and that a
// valid request pipelined before a malformed one is answered first.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { accessLines, MEDIA_ID, rawRequest, startEmulator, startProxy, waitFor } from './helpers.js'

test('early refusals are in the access log, with their X-Request-Id, and in the request metrics', async (t) => {
  const emulator = await startEmulator(t)
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)
  const host = `Host: ${hostname}:${port}`
  const answers = [
    await rawRequest(proxy.mediaUrl, 'GET', `/media/${MEDIA_ID}`, { headerLines: [host, 'Bad Header\u0001: x'] }),
    await rawRequest(proxy.mediaUrl, 'GET', '/media/x', { headerLines: [host, `X-Big: ${'a'.repeat(20_000)}`] }),
    await rawRequest(proxy.mediaUrl, 'CONNECT', 'example.com:443', { headerLines: ['Host: example.com:443'] }),
    await rawRequest(proxy.mediaUrl, 'GET', `/media/${MEDIA_ID}?q=1`, {
      headerLines: [host, 'Expect: something-else', 'User-Agent: refusal-test', 'Connection: close'],
    }),
  ]
  assert.deepEqual(
    answers.map((answer) => answer.status),
    [400, 431, 405, 417],
  )
  const lines = await waitFor(() => (accessLines(proxy).length === 4 ? accessLines(proxy) : undefined), '4 lines')
  for (const answer of answers) {
    // Safe delivery (signed links issue): a browser that follows a link to a refusal runs nothing.
    assert.equal(answer.headers['x-content-type-options'], 'nosniff')
    assert.equal(answer.headers['content-security-policy'], "default-src 'none'; sandbox")
    const line = lines.find((entry) => entry.reqId === answer.headers['x-request-id'])
    assert.ok(line, `an access line for the ${answer.status}`)
    assert.equal(line.status, answer.status)
    assert.equal(line.bytes, answer.body.length)
    assert.equal(line.aborted, false)
  }
  const expectation = lines.find((line) => line.status === 417)
  assert.equal(expectation?.method, 'GET')
  assert.equal(expectation?.path, `/media/${MEDIA_ID}`)
  assert.equal(expectation?.userAgent, 'refusal-test')
  assert.equal(lines.find((line) => line.status === 405)?.method, 'CONNECT')
  assert.equal(emulator.requests.length, 0)

  const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text()
  for (const status of [400, 431, 405, 417]) {
    assert.match(
      metrics,
      new RegExp(`media_proxy_requests_total\\{[^}]*route="unmatched"[^}]*status="${status}"[^}]*\\} 1`),
    )
  }
})

test('a valid request followed on the same connection by a malformed one gets its answer first, then the 400', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 4096)
  emulator.faults.push({ headersDelayMs: 200 })
  const proxy = await startProxy(t, emulator.url)
  const { hostname, port } = new URL(proxy.mediaUrl)
  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  let received = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk])
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.write(
    `GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: proxy\r\n\r\nGET /media/x HTTP/1.1\r\nBad Header\u0001: x\r\n\r\n`,
  )
  await closed

  // The 200 with its 4,096 body bytes, then the 400.
  const text = received.toString('latin1')
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]))
  assert.deepEqual(statuses, [200, 400])
  const firstBody = text.indexOf('\r\n\r\n') + 4
  assert.equal(text.indexOf('HTTP/1.1 400 '), firstBody + 4096)
  const line = await waitFor(() => accessLines(proxy).find((entry) => entry.mediaId === MEDIA_ID), 'the line')
  assert.equal(line.status, 200)
  assert.equal(line.bytes, 4096)
  assert.equal(line.aborted, false)
  const refused = await waitFor(() => accessLines(proxy).find((entry) => entry.status === 400), 'the 400 line')
  assert.equal(refused.path, '/media/x')
})
