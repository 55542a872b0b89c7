// Proves the upstream 401 handling: one fresh token and one retry, a second 401 becomes 502, Vonage's 401 never reaches a client, and concurrent 401s cause one new signature.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import type { RecordedRequest } from '../src/emulator/emulator.js'
import { APPLICATION_ID, concurrentStatuses, MEDIA_ID, startEmulator, startProxy } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const SIZE = 2_048

/** The jti of the token an upstream request carried, revoked or not (read from the JWT itself). */
function jtiOf(record: RecordedRequest): string {
  const token = /^Bearer (.+)$/.exec(record.headers.authorization ?? '')?.[1] ?? ''
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { jti: string }
  return claims.jti
}

async function setup(t: Parameters<typeof startEmulator>[0]) {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })
  const first = proxy.app.tokens.peek()
  assert.ok(first, 'the proxy signs its first token at start-up')
  return { emulator, proxy, first }
}

test('a revoked token: the proxy mints a fresh one, retries once, and keeps using the new one', async (t) => {
  const { emulator, proxy, first } = await setup(t)
  emulator.revokedTokenIds.add(first.jti)

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const body = Buffer.from(await res.body.arrayBuffer())

  assert.equal(res.statusCode, 200)
  assert.equal(body.length, SIZE)
  assert.equal(res.headers['www-authenticate'], undefined)
  assert.deepEqual(
    emulator.requests.map((r) => r.status),
    [401, 200],
  )
  const [refused, accepted] = emulator.requests as [RecordedRequest, RecordedRequest]
  assert.equal(jtiOf(refused), first.jti)
  assert.notEqual(accepted.jti, first.jti)
  assert.equal(accepted.jti, jtiOf(accepted))

  const later = await request(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`)
  await later.body.dump()
  assert.equal(later.statusCode, 200)
  assert.equal(emulator.requests.length, 3)
  assert.equal(emulator.requests[2]?.jti, accepted.jti, 'later requests carry the new token')
  assert.equal(proxy.app.tokens.peek()?.jti, accepted.jti)
})

test('two 401s in a row give 502 problem+json, never WWW-Authenticate or Vonage 401 body', async (t) => {
  const { emulator, proxy, first } = await setup(t)
  emulator.faults.push({ status: 401 }, { status: 401 })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const text = await res.body.text()
  const problem = JSON.parse(text) as Record<string, unknown>

  assert.equal(res.statusCode, 502)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  assert.equal(res.headers['www-authenticate'], undefined)
  assert.equal(problem.type, 'urn:vonage-media-proxy:problem:upstream-unauthorized')
  assert.equal(problem.status, 502)
  assert.equal(problem.requestId, res.headers['x-request-id'])
  assert.ok(!text.includes('Injected fault') && !text.includes('401'), "Vonage's 401 body is not passed on")
  // Exactly two upstream requests, the second with a freshly signed token; no third attempt.
  assert.deepEqual(
    emulator.requests.map((r) => r.status),
    [401, 401],
  )
  const jtis = emulator.requests.map(jtiOf)
  assert.equal(jtis[0], first.jti)
  assert.notEqual(jtis[1], first.jti)
})

test('many concurrent requests refused with the same revoked token cause one new signature', async (t) => {
  const { emulator, proxy, first } = await setup(t)
  emulator.revokedTokenIds.add(first.jti)
  const clients = 20

  const statuses = await concurrentStatuses(`${proxy.mediaUrl}/media/${MEDIA_ID}`, clients)

  assert.deepEqual(statuses, Array(clients).fill(200))
  const refused = emulator.requests.filter((r) => r.status === 401)
  const accepted = emulator.requests.filter((r) => r.status === 200)
  assert.equal(accepted.length, clients)
  assert.ok(refused.every((r) => jtiOf(r) === first.jti))
  const fresh = new Set(accepted.map((r) => r.jti))
  assert.equal(fresh.size, 1, `one new token for all, got ${fresh.size}`)
  assert.ok(!fresh.has(first.jti))
  // Signatures made, not only tokens used: the start-up one and exactly one more.
  const { body } = await proxy.app.metrics.exposition()
  assert.match(
    body,
    new RegExp(`media_proxy_token_refreshes_total\\{application="${APPLICATION_ID}",result="success"\\} 2\n`),
  )
})
