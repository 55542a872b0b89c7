// Minted tokens (and the one the upstream receives) verify outside jose and carry exactly the contract's header and claims, like @vonage/jwt's.
import assert from 'node:assert/strict'
import { verify } from 'node:crypto'
import { test } from 'node:test'
import { tokenGenerate } from '@vonage/jwt'
import jwt from 'jsonwebtoken'
import { request } from 'undici'
import { TokenSigner } from '../src/credentials/token-cache.js'
import { verifyApplicationToken } from '../src/emulator/verify-token.js'
import { APPLICATION_ID, keys, MEDIA_ID, startEmulator, startProxy } from './helpers.js'

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const CLAIM_NAMES = ['application_id', 'exp', 'iat', 'jti']

interface Decoded {
  header: Record<string, unknown>
  claims: Record<string, unknown>
}

function decodePart(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>
}

/**
 * Checks the RS256 signature with node:crypto and with jsonwebtoken (neither is the signer's
 * jose path), and that both read the same header and claims; returns them.
 */
function verifyBothWays(token: string, nowSeconds: number): Decoded {
  const parts = token.split('.')
  assert.equal(parts.length, 3, 'a compact JWS')
  const [headerPart, claimsPart, signaturePart] = parts as [string, string, string]
  assert.ok(
    verify(
      'RSA-SHA256',
      Buffer.from(`${headerPart}.${claimsPart}`),
      keys.publicKey,
      Buffer.from(signaturePart, 'base64url'),
    ),
    'node:crypto verifies the signature with the public key',
  )
  const header = decodePart(headerPart)
  const claims = decodePart(claimsPart)

  const complete = jwt.verify(token, keys.publicPem, {
    algorithms: ['RS256'],
    complete: true,
    clockTimestamp: nowSeconds,
  })
  assert.deepEqual(complete.header, header)
  assert.deepEqual(complete.payload, claims)

  // The same signature over altered claims must fail both ways: the checks above can fail.
  const altered = Buffer.from(JSON.stringify({ ...claims, application_id: 'x' })).toString('base64url')
  assert.ok(
    !verify(
      'RSA-SHA256',
      Buffer.from(`${headerPart}.${altered}`),
      keys.publicKey,
      Buffer.from(signaturePart, 'base64url'),
    ),
  )
  assert.throws(() =>
    jwt.verify(`${headerPart}.${altered}.${signaturePart}`, keys.publicPem, {
      algorithms: ['RS256'],
      clockTimestamp: nowSeconds,
    }),
  )
  return { header, claims }
}

/** The contract's header and claims, checked exactly. */
function assertContractToken({ header, claims }: Decoded, ttlSeconds: number): void {
  assert.deepEqual(header, { alg: 'RS256', typ: 'JWT' })
  assert.deepEqual(Object.keys(claims).sort(), CLAIM_NAMES)
  assert.equal(claims.application_id, APPLICATION_ID)
  assert.ok(Number.isInteger(claims.iat), 'iat is an integer')
  assert.ok(Number.isInteger(claims.exp), 'exp is an integer')
  assert.equal((claims.exp as number) - (claims.iat as number), ttlSeconds)
  assert.match(String(claims.jti), UUID_V4)
}

test('TokenSigner tokens verify with node:crypto and jsonwebtoken and hold exactly the contract claims', async () => {
  // A controlled clock 999 ms into a second: iat must round down, not to the nearest second.
  const clock = { now: () => 1_800_000_000_999 }
  for (const ttl of [30, 900, 86_400]) {
    const token = await new TokenSigner(keys.privateKey, APPLICATION_ID, ttl, clock).sign()
    const decoded = verifyBothWays(token.value, 1_800_000_000)
    assertContractToken(decoded, ttl)
    assert.equal(decoded.claims.iat, 1_800_000_000)
    assert.equal(decoded.claims.exp, 1_800_000_000 + ttl)
    assert.deepEqual(
      { jti: token.jti, iat: token.iat, exp: token.exp },
      { jti: decoded.claims.jti, iat: decoded.claims.iat, exp: decoded.claims.exp },
      'the Token record describes the signed claims',
    )
  }

  // With the real clock: iat is now, rounded down.
  const signer = new TokenSigner(keys.privateKey, APPLICATION_ID, 900)
  const before = Math.floor(Date.now() / 1000)
  const token = await signer.sign()
  const after = Math.floor(Date.now() / 1000)
  const { claims } = verifyBothWays(token.value, after)
  assert.ok((claims.iat as number) >= before && (claims.iat as number) <= after, 'iat is now')
})

test('every token gets a fresh UUID v4 jti', async () => {
  const signer = new TokenSigner(keys.privateKey, APPLICATION_ID, 900, { now: () => 1_800_000_000_000 })
  const tokens = await Promise.all(Array.from({ length: 50 }, () => signer.sign()))
  const jtis = tokens.map((token) => decodePart(token.value.split('.')[1] as string).jti)
  for (const jti of jtis) assert.match(String(jti), UUID_V4)
  assert.equal(new Set(jtis).size, jtis.length, 'no jti repeats')
  // Same second, same claims otherwise: the jti alone must make each token distinct.
  assert.equal(new Set(tokens.map((token) => token.value)).size, tokens.length)
})

test('the token the upstream receives through the proxy verifies and holds exactly the contract claims', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 64)
  const started = Math.floor(Date.now() / 1000)
  const proxy = await startProxy(t, emulator.url, { JWT_TTL_SECONDS: '120' })

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await res.body.dump()
  const after = Math.floor(Date.now() / 1000)
  assert.equal(res.statusCode, 200)

  assert.equal(emulator.requests.length, 1)
  const authorization = emulator.requests[0]?.headers.authorization ?? ''
  const match = /^Bearer ([\w-]+\.[\w-]+\.[\w-]+)$/.exec(authorization)
  assert.ok(match?.[1], 'the upstream got "Authorization: Bearer <JWS>"')
  const decoded = verifyBothWays(match[1], after)
  assertContractToken(decoded, 120)
  // Signed at start-up or on this request: either way during this test, never in the future.
  assert.ok((decoded.claims.iat as number) >= started && (decoded.claims.iat as number) <= after)
  assert.equal(emulator.requests[0]?.jti, decoded.claims.jti, 'the emulator accepted this very token')
})

test('conformance with @vonage/jwt: same header, claim names and types, and exp - iat', async () => {
  for (const ttl of [30, 900, 86_400]) {
    const ours = await new TokenSigner(keys.privateKey, APPLICATION_ID, ttl).sign()
    const theirs = tokenGenerate(APPLICATION_ID, keys.pkcs8, { ttl })
    const now = Math.floor(Date.now() / 1000)
    const a = verifyBothWays(ours.value, now)
    const b = verifyBothWays(theirs, now)

    assert.deepEqual(a.header, b.header)
    assert.equal(ours.value.split('.')[0], theirs.split('.')[0], 'byte-identical header')
    assert.deepEqual(Object.keys(a.claims).sort(), Object.keys(b.claims).sort())
    for (const name of Object.keys(b.claims)) {
      assert.equal(typeof a.claims[name], typeof b.claims[name], `type of ${name}`)
      assert.equal(Number.isInteger(a.claims[name]), Number.isInteger(b.claims[name]), `integer-ness of ${name}`)
    }
    assert.equal((a.claims.exp as number) - (a.claims.iat as number), ttl)
    assert.equal((b.claims.exp as number) - (b.claims.iat as number), ttl)
    assert.match(String(b.claims.jti), UUID_V4)
    assertContractToken(a, ttl)
    assertContractToken(b, ttl)

    // The emulator judges tokens as Vonage does: it must accept the official generator's too.
    const check = verifyApplicationToken(`Bearer ${theirs}`, keys.publicKey, APPLICATION_ID, now)
    assert.ok(check.ok, check.ok ? '' : check.reason)
  }
})
