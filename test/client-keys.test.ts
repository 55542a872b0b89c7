// Proves INBOUND_API_KEYS: only "Bearer <one of the keys>" gets through, and the key is never forwarded nor logged.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { accessLines, MEDIA_ID, type RunningProxy, startEmulator, startProxy, waitFor } from './helpers.js'

const KEY_A = 'ka_7Q2m9Xv4Lp8Rz1Tn6Wc3Hd5Jf0Gs'
const KEY_B = 'kb_Ym4Nq8Ve2Bx6Pk0Lt3Zr7Cw1Hs9D'
const SIZE = 512

interface Attempt {
  name: string
  authorization: string | undefined
}

const REJECTED: Attempt[] = [
  { name: 'no Authorization', authorization: undefined },
  { name: 'a wrong key', authorization: 'Bearer kz_wrong-key-of-similar-length1' },
  { name: 'the Basic scheme', authorization: `Basic ${Buffer.from(`user:${KEY_A}`).toString('base64')}` },
  { name: 'Basic with the raw key', authorization: `Basic ${KEY_A}` },
  { name: 'a prefix of a real key', authorization: `Bearer ${KEY_A.slice(0, -1)}` },
  { name: 'a real key with extra characters', authorization: `Bearer ${KEY_B}x` },
  { name: 'a real key in another case', authorization: `Bearer ${KEY_A.toUpperCase()}` },
  { name: 'the key without a scheme', authorization: KEY_A },
  { name: 'both keys as configured', authorization: `Bearer ${KEY_A},${KEY_B}` },
  { name: 'an empty Bearer', authorization: 'Bearer' },
]

async function get(proxy: RunningProxy, path: string, authorization?: string, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(`${proxy.mediaUrl}${path}`, {
    method,
    headers: authorization === undefined ? {} : { authorization },
  })
  return { res, body: await res.body.text() }
}

test('with INBOUND_API_KEYS set, a missing or wrong key gets 401 and nothing goes upstream', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url, { INBOUND_API_KEYS: `${KEY_A},${KEY_B}` })

  let requests = 0
  for (const attempt of REJECTED) {
    for (const [method, path] of [
      ['GET', `/media/${MEDIA_ID}`],
      ['GET', `/v3/media/${MEDIA_ID}`],
      ['HEAD', `/media/${MEDIA_ID}`],
    ] as const) {
      const { res, body } = await get(proxy, path, attempt.authorization, method)
      requests++
      const what = `${attempt.name}: ${method} ${path}`
      assert.equal(res.statusCode, 401, what)
      assert.match(String(res.headers['www-authenticate']), /^Bearer( |$)/, what)
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/, what)
      const requestId = res.headers['x-request-id']
      assert.equal(typeof requestId, 'string', what)
      if (method === 'HEAD') {
        assert.equal(body, '', what)
        continue
      }
      const problem = JSON.parse(body) as Record<string, unknown>
      assert.deepEqual(Object.keys(problem).sort(), ['detail', 'requestId', 'status', 'title', 'type'], what)
      assert.equal(problem.status, 401, what)
      assert.match(String(problem.type), /unauthorized$/, what)
      assert.equal(problem.requestId, requestId, what)
      assert.ok(!body.includes(KEY_A) && !body.includes(KEY_B), `${what}: the problem names no key`)
    }
  }
  assert.equal(emulator.requests.length, 0, 'no rejected request reached the emulator')

  // Each configured key works, on both prefixes and for HEAD.
  const accepted: [string, 'GET' | 'HEAD', string][] = [
    [KEY_A, 'GET', `/media/${MEDIA_ID}`],
    [KEY_B, 'GET', `/v3/media/${MEDIA_ID}`],
    [KEY_B, 'HEAD', `/media/${MEDIA_ID}`],
  ]
  for (const [key, method, path] of accepted) {
    const { res, body } = await get(proxy, path, `Bearer ${key}`, method)
    requests++
    assert.equal(res.statusCode, 200, `${method} ${path}`)
    assert.equal(res.headers['content-length'], String(SIZE))
    assert.equal(body.length, method === 'HEAD' ? 0 : SIZE)
    assert.equal(res.headers['www-authenticate'], undefined)
  }

  // The emulator saw the proxy's application JWT (it verified it: jti is set), never a client key.
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`GET /v3/media/${MEDIA_ID}`, `GET /v3/media/${MEDIA_ID}`, `HEAD /v3/media/${MEDIA_ID}`],
  )
  for (const seen of emulator.requests) {
    assert.match(String(seen.headers.authorization), /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
    assert.equal(typeof seen.jti, 'string')
    const headers = JSON.stringify(seen.headers)
    assert.ok(!headers.includes(KEY_A) && !headers.includes(KEY_B), 'no client key in the upstream request')
  }

  // Neither the configured keys nor any credential a client presented shows up in the logs.
  await waitFor(() => accessLines(proxy).length === requests, 'one access-log line per request')
  const statuses = accessLines(proxy).map((line) => line.status)
  assert.equal(statuses.filter((status) => status === 401).length, REJECTED.length * 3)
  assert.equal(statuses.filter((status) => status === 200).length, accepted.length)
  const logs = proxy.rawLogs()
  const presented = [KEY_A, KEY_B, ...REJECTED.map((attempt) => attempt.authorization?.replace(/^\w+ +/, ''))]
  for (const secret of presented) {
    if (secret && secret.length >= 8) assert.ok(!logs.includes(secret), `the logs do not contain ${secret}`)
  }
})

test('without INBOUND_API_KEYS no client auth is needed, and a client Authorization is not forwarded', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url)

  const anonymous = await get(proxy, `/media/${MEDIA_ID}`)
  assert.equal(anonymous.res.statusCode, 200)
  assert.equal(anonymous.body.length, SIZE)

  const withHeader = await get(proxy, `/v3/media/${MEDIA_ID}`, `Bearer ${KEY_A}`)
  assert.equal(withHeader.res.statusCode, 200)
  assert.equal(withHeader.body.length, SIZE)

  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`GET /v3/media/${MEDIA_ID}`, `GET /v3/media/${MEDIA_ID}`],
  )
  for (const seen of emulator.requests) {
    assert.equal(typeof seen.jti, 'string', 'the emulator verified the application JWT')
    assert.ok(!JSON.stringify(seen.headers).includes(KEY_A), 'the client Authorization stayed at the proxy')
  }
  await waitFor(() => accessLines(proxy).length === 2, 'one access-log line per request')
  assert.ok(!proxy.rawLogs().includes(KEY_A))
})
