// Proves MAX_IN_FLIGHT_REQUESTS: past the limit a valid request gets 503 with Retry-After: 1 and never reaches the emulator; bad ids (400) and bad keys (401) are checked first and not counted.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Agent, type Dispatcher, request } from 'undici'
import { MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const LIMIT = 3
const CLIENT_KEY = 'load-shedding-client-key-0123456789'
const AUTH = { authorization: `Bearer ${CLIENT_KEY}` }
/** Large enough that a client which stops reading holds its response open (socket buffers fill). */
const HELD_SIZE = 64 * 1024 * 1024
const SMALL_ID = '2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f'
const SMALL_SIZE = 1024

function problemOf(body: string): Record<string, unknown> {
  return JSON.parse(body) as Record<string, unknown>
}

async function countBytes(body: Dispatcher.ResponseData['body']): Promise<number> {
  let bytes = 0
  for await (const chunk of body) bytes += (chunk as Buffer).length
  return bytes
}

test('past MAX_IN_FLIGHT_REQUESTS a valid request gets 503 Retry-After: 1, checked after id and key', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, HELD_SIZE)
  emulator.media.addSynthetic(SMALL_ID, SMALL_SIZE)
  const proxy = await startProxy(t, emulator.url, {
    MAX_IN_FLIGHT_REQUESTS: String(LIMIT),
    INBOUND_API_KEYS: CLIENT_KEY,
  })
  const agent = new Agent()
  t.after(() => agent.destroy())

  // LIMIT clients take their response headers and stop reading: each response stays in flight.
  const held = await Promise.all(
    Array.from({ length: LIMIT }, () =>
      request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { dispatcher: agent, headers: AUTH }),
    ),
  )
  for (const res of held) assert.equal(res.statusCode, 200)
  await waitFor(() => proxy.app.inFlight.count === LIMIT, `${LIMIT} requests in flight`)
  assert.equal(emulator.requests.length, LIMIT)
  assert.equal(emulator.openResponses, LIMIT, 'the held responses are still streaming')

  // Saturated: every valid, authorised media request is shed, whatever its prefix or method.
  for (const [method, path] of [
    ['GET', `/media/${SMALL_ID}`],
    ['GET', `/v3/media/${SMALL_ID}`],
    ['HEAD', `/media/${SMALL_ID}`],
    ['GET', `/media/${MEDIA_ID}`],
  ] as const) {
    const res = await request(`${proxy.mediaUrl}${path}`, { dispatcher: agent, method, headers: AUTH })
    const body = await res.body.text()
    assert.equal(res.statusCode, 503, `${method} ${path}`)
    assert.equal(res.headers['retry-after'], '1')
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/)
    const requestId = res.headers['x-request-id']
    assert.equal(typeof requestId, 'string')
    if (method === 'GET') {
      const problem = problemOf(body)
      assert.deepEqual(Object.keys(problem).sort(), ['detail', 'requestId', 'status', 'title', 'type'])
      assert.equal(problem.status, 503)
      assert.match(String(problem.type), /overloaded$/)
      assert.equal(problem.requestId, requestId)
    } else {
      assert.equal(body, '')
    }
  }

  // A bad id and a bad key are answered as such even now, and take no slot.
  const badId = await request(`${proxy.mediaUrl}/media/not-a-uuid`, { dispatcher: agent, headers: AUTH })
  assert.equal(badId.statusCode, 400)
  assert.match(String(problemOf(await badId.body.text()).type), /invalid-media-id$/)
  assert.equal(badId.headers['retry-after'], undefined)

  for (const headers of [{}, { authorization: 'Bearer not-the-key' }]) {
    const badKey = await request(`${proxy.mediaUrl}/media/${SMALL_ID}`, { dispatcher: agent, headers })
    assert.equal(badKey.statusCode, 401)
    assert.match(String(badKey.headers['www-authenticate']), /^Bearer/)
    assert.match(String(problemOf(await badKey.body.text()).type), /unauthorized$/)
    assert.equal(badKey.headers['retry-after'], undefined)
  }

  assert.equal(proxy.app.inFlight.count, LIMIT, 'rejected requests took no slot')
  assert.equal(emulator.openResponses, LIMIT, 'still saturated: the checks above ran against a full proxy')
  assert.equal(emulator.requests.length, LIMIT, 'nothing rejected reached the emulator')

  // The held clients read to the end: their responses complete and free every slot.
  const sizes = await Promise.all(held.map((res) => countBytes(res.body)))
  assert.deepEqual(sizes, Array(LIMIT).fill(HELD_SIZE))
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight count back to 0')

  const after = await request(`${proxy.mediaUrl}/v3/media/${SMALL_ID}`, { dispatcher: agent, headers: AUTH })
  assert.equal(after.statusCode, 200)
  assert.equal((await after.body.arrayBuffer()).byteLength, SMALL_SIZE)
  await waitFor(() => proxy.app.inFlight.count === 0, 'in-flight count back to 0 after the last request')

  await waitFor(() => emulator.openResponses === 0, 'emulator finished every response')
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url} ${r.status} aborted=${r.aborted}`),
    [
      ...Array(LIMIT).fill(`GET /v3/media/${MEDIA_ID} 200 aborted=false`),
      `GET /v3/media/${SMALL_ID} 200 aborted=false`,
    ],
  )
})

test('a request still waiting for upstream headers holds its slot until its client leaves', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(SMALL_ID, SMALL_SIZE)
  const proxy = await startProxy(t, emulator.url, { MAX_IN_FLIGHT_REQUESTS: '1' })
  const agent = new Agent()
  t.after(() => agent.destroy())

  // Far beyond the test's life: only the client leaving can end this request.
  emulator.faults.push({ headersDelayMs: 60_000 })
  const controller = new AbortController()
  const held = request(`${proxy.mediaUrl}/media/${SMALL_ID}`, { dispatcher: agent, signal: controller.signal })
  await waitFor(() => emulator.requests.length === 1, 'the held request reached the emulator')
  assert.equal(proxy.app.inFlight.count, 1)

  const shed = await request(`${proxy.mediaUrl}/media/${SMALL_ID}`, { dispatcher: agent })
  assert.equal(shed.statusCode, 503)
  assert.equal(shed.headers['retry-after'], '1')
  await shed.body.dump()
  assert.equal(emulator.requests.length, 1, 'the shed request did not reach the emulator')

  controller.abort()
  await assert.rejects(held)
  await waitFor(() => proxy.app.inFlight.count === 0, 'the slot is freed when the client leaves')
  await waitFor(() => emulator.requests[0]?.closed, 'the upstream request was aborted')
  assert.equal(emulator.requests[0]?.aborted, true)

  const after = await request(`${proxy.mediaUrl}/media/${SMALL_ID}`, { dispatcher: agent })
  assert.equal(after.statusCode, 200)
  assert.equal((await after.body.arrayBuffer()).byteLength, SMALL_SIZE)
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`GET /v3/media/${SMALL_ID}`, `GET /v3/media/${SMALL_ID}`],
  )
})
