// Proves the three upstream timeouts: headers (504, not retried), body as silence between chunks (never a total), and connect (502 after retries).
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import { accessLines, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const TIMEOUTS = {
  UPSTREAM_HEADERS_TIMEOUT_MS: '300',
  UPSTREAM_BODY_TIMEOUT_MS: '300',
  UPSTREAM_CONNECT_TIMEOUT_MS: '300',
}

test('no upstream headers within UPSTREAM_HEADERS_TIMEOUT_MS gives 504 problem+json, without a retry', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  emulator.faults.push({ headersDelayMs: 5_000 })
  const proxy = await startProxy(t, emulator.url, TIMEOUTS, { retry: FAST_RETRY })

  const started = performance.now()
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const problem = (await res.body.json()) as Record<string, unknown>
  const elapsed = performance.now() - started

  assert.equal(res.statusCode, 504)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  assert.equal(problem.status, 504)
  assert.equal(problem.type, 'urn:vonage-media-proxy:problem:upstream-timeout')
  assert.equal(problem.requestId, res.headers['x-request-id'])
  // undici checks the headers timeout on a coarse (about 0.5 s tick) timer: allow for it.
  assert.ok(elapsed >= 250 && elapsed < 3_000, `answered after ${elapsed} ms`)
  // Exactly one upstream request, given up by the proxy (not answered by the emulator).
  await waitFor(() => emulator.requests[0]?.closed, 'the emulator sees the timed-out request closed', 1_000)
  assert.equal(emulator.requests.length, 1)
  assert.equal(emulator.requests[0]?.aborted, true)
  assert.equal(emulator.faults.length, 0)
})

test('a slow but steady body that takes longer than UPSTREAM_BODY_TIMEOUT_MS in total is not cut', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 5_000)
  // 50 pieces of 100 bytes, 40 ms apart: about 2 s in total, never 300 ms of silence. The total
  // must beat undici's coarse timer too, which lets a 300 ms timeout fire up to ~1.3 s late.
  emulator.faults.push({ dripDelayMs: 40, dripBytes: 100 })
  const proxy = await startProxy(t, emulator.url, TIMEOUTS, { retry: FAST_RETRY })

  const started = performance.now()
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const body = Buffer.from(await res.body.arrayBuffer())
  const elapsed = performance.now() - started

  assert.equal(res.statusCode, 200)
  assert.equal(body.length, 5_000)
  assert.equal(body[4_999], 4_999 % 251)
  assert.ok(elapsed > 1_800, `the drip took ${elapsed} ms, six times the body timeout`)
  await waitFor(() => emulator.requests[0]?.closed, 'the emulator finishes the response', 1_000)
  assert.equal(emulator.requests.length, 1)
  assert.equal(emulator.requests[0]?.aborted, false)
})

test('silence past UPSTREAM_BODY_TIMEOUT_MS after headers destroys the client connection', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 64 * 1024)
  emulator.faults.push({ stallAfterBytes: 1_000 })
  const proxy = await startProxy(t, emulator.url, TIMEOUTS, { retry: FAST_RETRY })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-length'], String(64 * 1024))
  let received = 0
  const outcome = await (async () => {
    for await (const chunk of res.body) received += (chunk as Buffer).length
  })().then(
    () => 'clean end',
    (err: Error) => err,
  )

  assert.ok(outcome instanceof Error, 'the client must see an error, never a clean end of a short body')
  assert.equal(received, 1_000)
  // The proxy gave up on the stalled upstream response: the emulator sees it cut, and no retry.
  await waitFor(() => emulator.requests[0]?.closed, 'the emulator sees the stalled response closed', 1_000)
  assert.equal(emulator.requests[0]?.aborted, true)
  assert.equal(emulator.requests.length, 1)
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight returns to 0', 1_000)
})

test('an upstream that refuses connections gives 502 problem+json after two retries', async (t) => {
  // A port that was free a moment ago: nothing listens there now, so connecting is refused.
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as { port: number }
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const upstreamUrl = `http://127.0.0.1:${port}`
  const proxy = await startProxy(t, upstreamUrl, TIMEOUTS, { retry: FAST_RETRY })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const text = await res.body.text()
  const problem = JSON.parse(text) as Record<string, unknown>

  assert.equal(res.statusCode, 502)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  assert.equal(problem.status, 502)
  assert.equal(problem.type, 'urn:vonage-media-proxy:problem:upstream-unavailable')
  assert.ok(!text.includes(String(port)), 'the problem names no internal address')
  // Nothing listened, so the only witness is the proxy: three attempts, two of them retries.
  const line = await waitFor(() => accessLines(proxy)[0], 'the access log line')
  assert.equal(line.retries, 2)
  assert.equal(line.status, 502)
  const { body } = await proxy.app.metrics.exposition()
  assert.match(body, /media_proxy_upstream_retries_total\{reason="connect_error"\} 2\n/)
})
