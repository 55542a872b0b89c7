// Bad media ids get 400, other methods 405 with Allow, other paths 404; none reaches upstream.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MEDIA_ID, type RawResponse, rawRequest, startEmulator, startProxy, waitFor } from './helpers.js'

/** Asserts an RFC 9457 problem made by the proxy, whose requestId is the echoed X-Request-Id. */
function assertProblem(res: RawResponse, status: number, what: string): void {
  assert.equal(res.status, status, what)
  assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json(;|$)/, what)
  assert.equal(Number(res.headers['content-length']), res.body.length, what)
  const problem = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>
  assert.deepEqual(Object.keys(problem).sort(), ['detail', 'requestId', 'status', 'title', 'type'], what)
  assert.equal(problem.status, status, what)
  assert.equal(typeof problem.type, 'string', what)
  assert.equal(typeof problem.title, 'string', what)
  assert.equal(typeof problem.detail, 'string', what)
  assert.ok(res.headers['x-request-id'], `${what}: X-Request-Id`)
  assert.equal(problem.requestId, res.headers['x-request-id'], what)
}

const BAD_IDS: Record<string, string> = {
  'path traversal': '../x',
  'deep path traversal': '../../../v3/media/x',
  'encoded traversal': '..%2F..%2Fx',
  'encoded traversal to a real id': `..%2F${MEDIA_ID}`,
  'encoded slash after the id': `${MEDIA_ID}%2F..`,
  'encoded slash inside the id': `1b456509%2F974c-458b-aafa-45fc48a4d976`,
  'double-encoded slash': `${MEDIA_ID}%252F..`,
  'encoded backslash': `..%5C${MEDIA_ID}`,
  'NUL byte': `${MEDIA_ID}%00`,
  'NUL byte inside': `1b456509-974c-458b-aafa-45fc48a4%00976`,
  'overlong id': 'a'.repeat(5_000),
  'overlong hex run': `${MEDIA_ID}${'0'.repeat(64)}`,
  'non-hex digits': 'gb456509-974c-458b-aafa-45fc48a4d976',
  'no dashes': '1b456509974c458baafa45fc48a4d976',
  'braced uuid': `{${MEDIA_ID}}`,
  'uuid with hex suffix': `${MEDIA_ID}0`,
  'uuid with extension': `${MEDIA_ID}.jpg`,
  'uuid with a sub-path': `${MEDIA_ID}/info`,
  'uuid with trailing slash': `${MEDIA_ID}/`,
  'uuid with encoded space': `${MEDIA_ID}%20`,
  'empty id': '',
  'empty segment before the id': `/${MEDIA_ID}`,
}

test('a media id that is not a UUID gets 400 problem+json and nothing is sent upstream', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  for (const prefix of ['/media/', '/v3/media/']) {
    for (const [name, id] of Object.entries(BAD_IDS)) {
      for (const method of ['GET', 'HEAD']) {
        const what = `${method} ${prefix} ${name}`
        const res = await rawRequest(proxy.mediaUrl, method, `${prefix}${id}`)
        if (method === 'HEAD') {
          assert.equal(res.status, 400, what)
          assert.equal(res.body.length, 0, `${what}: a HEAD answer has no body`)
        } else {
          assertProblem(res, 400, what)
        }
      }
    }
  }
  assert.deepEqual(emulator.requests, [], 'the emulator received nothing')
})

test('another method on a media path gets 405 with Allow: GET, HEAD and nothing is sent upstream', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  for (const prefix of ['/media/', '/v3/media/']) {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const what = `${method} ${prefix}<uuid>`
      const res = await rawRequest(proxy.mediaUrl, method, `${prefix}${MEDIA_ID}`, { body: '{}' })
      assertProblem(res, 405, what)
      assert.equal(res.headers.allow, 'GET, HEAD', what)
    }
  }
  assert.deepEqual(emulator.requests, [], 'the emulator received nothing')
})

test('any other path on the media port gets 404 problem+json and nothing is sent upstream', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  const paths = [
    '/',
    '/metrics',
    '/healthz',
    '/readyz',
    '/media',
    '/v3/media',
    `/v2/media/${MEDIA_ID}`,
    `/v3/media-x/${MEDIA_ID}`,
    `/v3/${MEDIA_ID}`,
    `/${MEDIA_ID}`,
    `/MEDIA/${MEDIA_ID}`,
  ]
  for (const path of paths) assertProblem(await rawRequest(proxy.mediaUrl, 'GET', path), 404, `GET ${path}`)
  assert.deepEqual(emulator.requests, [], 'the emulator received nothing')
})

test('an upper-case UUID is a valid media id', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)
  const upper = MEDIA_ID.toUpperCase()

  for (const prefix of ['/media/', '/v3/media/']) {
    const res = await rawRequest(proxy.mediaUrl, 'GET', `${prefix}${upper}`)
    assert.equal(res.status, 200, prefix)
    assert.equal(res.body.length, 1024, prefix)
    assert.equal(res.body[1000], 1000 % 251, prefix)
  }
  await waitFor(() => emulator.requests.every((r) => r.closed), 'the emulator finished both answers')
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url} ${r.status}`),
    [`GET /v3/media/${upper} 200`, `GET /v3/media/${upper} 200`],
  )
})
