// Proves that upstream 429 (with and without Retry-After) and 404 reach the client as they are, and are never retried.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { MEDIA_ID, startEmulator, startProxy } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const UNKNOWN_ID = '00000000-1111-4222-8333-444444444444'

for (const retryAfter of ['7', undefined]) {
  test(`upstream 429 ${retryAfter ? 'with' : 'without'} Retry-After passes through, not retried`, async (t) => {
    const emulator = await startEmulator(t)
    emulator.media.addSynthetic(MEDIA_ID, 1_024)
    emulator.faults.push({ status: 429, retryAfter })
    const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })

    const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    const problem = (await res.body.json()) as Record<string, unknown>

    assert.equal(res.statusCode, 429)
    assert.equal(res.headers['retry-after'], retryAfter)
    assert.equal(res.headers['content-type'], 'application/problem+json')
    assert.ok(res.headers['x-request-id'])
    // Vonage's own problem body, untouched (the proxy's would name a requestId).
    assert.equal(problem.title, 'Injected fault')
    assert.equal(problem.type, 'https://developer.vonage.com/api-errors#429')
    assert.equal(problem.requestId, undefined)
    assert.equal(emulator.requests.length, 1)
    assert.equal(emulator.requests[0]?.status, 429)
  })
}

test('upstream 404 passes through with its problem body, not retried', async (t) => {
  const emulator = await startEmulator(t)
  const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })

  const res = await request(`${proxy.mediaUrl}/v3/media/${UNKNOWN_ID}`)
  const problem = (await res.body.json()) as Record<string, unknown>

  assert.equal(res.statusCode, 404)
  assert.equal(res.headers['content-type'], 'application/problem+json')
  assert.equal(problem.type, 'https://developer.vonage.com/api-errors#404')
  assert.equal(problem.detail, 'The media item does not exist or has expired.')
  assert.equal(problem.requestId, undefined)
  assert.deepEqual(
    emulator.requests.map((r) => [r.method, r.url, r.status]),
    [['GET', `/v3/media/${UNKNOWN_ID}`, 404]],
  )
  assert.ok(emulator.requests[0]?.jti, 'the 404 came after a valid token, not from the token check')
})
