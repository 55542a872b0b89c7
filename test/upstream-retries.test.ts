// Proves the proxy's own retry policy: 502/503/504 and resets before headers are retried at most twice, never once the body started, and never as a storm.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { accessLines, concurrentStatuses, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const SIZE = 4_096

async function setup(t: Parameters<typeof startEmulator>[0]) {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })
  return { emulator, proxy }
}

for (const status of [503, 502, 504]) {
  test(`one upstream ${status} then success: the client gets 200 after exactly 2 upstream requests`, async (t) => {
    const { emulator, proxy } = await setup(t)
    emulator.faults.push({ status })

    const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    const body = Buffer.from(await res.body.arrayBuffer())

    assert.equal(res.statusCode, 200)
    assert.equal(body.length, SIZE)
    assert.equal(body[SIZE - 1], (SIZE - 1) % 251)
    assert.deepEqual(
      emulator.requests.map((r) => [r.method, r.url, r.status]),
      [
        ['GET', `/v3/media/${MEDIA_ID}`, status],
        ['GET', `/v3/media/${MEDIA_ID}`, 200],
      ],
    )
    const line = await waitFor(() => accessLines(proxy)[0], 'the access log line')
    assert.equal(line.retries, 1)
    assert.equal(line.upstreamStatus, 200)
  })
}

test('three upstream 503s: the client gets 502 problem+json after exactly 3 upstream requests', async (t) => {
  const { emulator, proxy } = await setup(t)
  emulator.faults.push({ status: 503 }, { status: 503 }, { status: 503 })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const text = await res.body.text()
  const problem = JSON.parse(text) as Record<string, unknown>

  assert.equal(res.statusCode, 502)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  assert.equal(problem.type, 'urn:vonage-media-proxy:problem:upstream-unavailable')
  assert.equal(problem.status, 502)
  assert.equal(problem.requestId, res.headers['x-request-id'])
  assert.ok(!text.includes('Injected fault'), "the upstream's 503 body is not passed on")
  assert.deepEqual(
    emulator.requests.map((r) => r.status),
    [503, 503, 503],
  )
})

test('a reset before response headers, then success: the client gets 200', async (t) => {
  const { emulator, proxy } = await setup(t)
  emulator.faults.push({ resetBeforeHeaders: true })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const body = Buffer.from(await res.body.arrayBuffer())

  assert.equal(res.statusCode, 200)
  assert.equal(body.length, SIZE)
  assert.equal(emulator.requests.length, 2)
  assert.equal(emulator.requests[0]?.aborted, true)
  assert.equal(emulator.requests[1]?.status, 200)
  assert.equal(emulator.requests[1]?.aborted, false)
})

test('no retry storm: many clients against a failing upstream cause at most 3 upstream requests each', async (t) => {
  const { emulator, proxy } = await setup(t)
  const clients = 5
  const queued = 50
  for (let i = 0; i < queued; i++) emulator.faults.push({ status: 503 })

  const statuses = await concurrentStatuses(`${proxy.mediaUrl}/media/${MEDIA_ID}`, clients)

  assert.deepEqual(statuses, Array(clients).fill(502))
  assert.equal(emulator.requests.length, clients * 3)
  assert.equal(emulator.faults.length, queued - clients * 3)
  // Each client's request is over, with its two retries spent: nothing retries in the background.
  await waitFor(() => accessLines(proxy).length === clients, 'one access log line per client')
  assert.deepEqual(
    accessLines(proxy).map((line) => [line.status, line.retries]),
    Array(clients).fill([502, 2]),
  )
  assert.equal(emulator.requests.length, clients * 3)
  assert.equal(proxy.app.inFlight.count, 0)
})

test('no retry once the body started: a reset mid-body is not retried', async (t) => {
  const { emulator, proxy } = await setup(t)
  emulator.faults.push({ resetAfterBytes: 1_000 })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 200)
  const outcome = await res.body.arrayBuffer().then(
    () => 'clean end',
    (err: Error) => err,
  )

  assert.ok(outcome instanceof Error, 'the client sees the failure, not a short body')
  await waitFor(() => accessLines(proxy)[0], 'the access log line')
  assert.equal(emulator.requests.length, 1)
  assert.equal(emulator.requests[0]?.aborted, true)
  assert.equal(accessLines(proxy)[0]?.retries, 0)
})
