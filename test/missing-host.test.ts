// An HTTP/1.1 request without Host gets a 400 problem+json (with X-Request-Id) on both ports,
// not Node's bare 400, and nothing goes upstream; HTTP/1.0, where Host is optional, is served.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { MEDIA_ID, rawRequest, startEmulator, startProxy } from './helpers.js'

test('HTTP/1.1 without Host: 400 problem+json on both ports; HTTP/1.0 without Host is served', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100)
  const proxy = await startProxy(t, emulator.url)

  for (const [base, path] of [
    [proxy.mediaUrl, `/media/${MEDIA_ID}`],
    [proxy.adminUrl, '/healthz'],
  ] as const) {
    const res = await rawRequest(base, 'GET', path, { headerLines: ['Connection: close'] })
    assert.equal(res.status, 400, path)
    assert.equal(res.headers['content-type'], 'application/problem+json', path)
    const problem = JSON.parse(res.body.toString('utf8')) as { status: number; requestId: string }
    assert.equal(problem.status, 400, path)
    assert.equal(problem.requestId, res.headers['x-request-id'], path)
  }
  assert.equal(emulator.requests.length, 0)

  const { hostname, port } = new URL(proxy.mediaUrl)
  const old = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    const socket = connect(Number(port), hostname)
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.once('end', () => resolve(Buffer.concat(chunks)))
    socket.once('error', reject)
    socket.write(`GET /media/${MEDIA_ID} HTTP/1.0\r\n\r\n`)
  })
  assert.match(old.toString('latin1'), /^HTTP\/1\.1 200 /)
  assert.equal(emulator.requests.length, 1)
})
