// Every proxy path, run against a real process at LOG_LEVEL=trace with INBOUND_API_KEYS set:
// nothing it writes (stdout, stderr) and nothing a client receives contains a JWT, any part
// of the PEM, or an inbound API key.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import { keys, MEDIA_ID, proxyEnv, spawnProxy, startEmulator, waitFor } from './helpers.js'

const INBOUND_KEYS = ['client-key-one-5f0c2b7e9d1a4c6e', 'client-key-two-8a3d6b1f4e7c2a9d']
const BIG_ID = '00000000-0000-4000-8000-00000000b16b'

/** Fragments of the PEM long enough to be unmistakable: every base64 line, and 24-char windows. */
function pemFragments(pem: string): string[] {
  const lines = pem.split('\n').filter((line) => line.length > 0 && !line.startsWith('-----'))
  const body = lines.join('')
  const windows: string[] = []
  for (let i = 0; i + 24 <= body.length; i += 24) windows.push(body.slice(i, i + 24))
  return [...lines, ...windows]
}

test('no JWT, PEM fragment or inbound key appears in any output or response', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'secrets-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const keyPath = join(dir, 'private.key')
  writeFileSync(keyPath, keys.pkcs8)

  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 2048, { contentType: 'image/png' })
  emulator.media.addSynthetic(BIG_ID, 64 * 1024 * 1024)
  const proxy = await spawnProxy(
    t,
    proxyEnv(emulator.url, {
      VONAGE_PRIVATE_KEY: '',
      VONAGE_PRIVATE_KEY_PATH: keyPath,
      INBOUND_API_KEYS: INBOUND_KEYS.join(','),
      LOG_LEVEL: 'trace',
      UPSTREAM_HEADERS_TIMEOUT_MS: '200',
    }),
  )
  const media = `${proxy.mediaUrl}/media/${MEDIA_ID}`
  const good = { authorization: `Bearer ${INBOUND_KEYS[0]}` }
  const responses: string[] = []
  const call = async (url: string, options: Parameters<typeof request>[1] = {}) => {
    const res = await request(url, options)
    const body = await res.body.text()
    responses.push(JSON.stringify(res.headers), body)
    return res.statusCode
  }

  assert.equal(await call(media, { headers: good }), 200)
  assert.equal(await call(media, { headers: { ...good, range: 'bytes=0-9' } }), 206)
  assert.equal(await call(media, { method: 'HEAD', headers: good }), 200)
  assert.equal(
    await call(`${media}?token=${INBOUND_KEYS[1]}`, { headers: { authorization: `Bearer ${INBOUND_KEYS[1]}` } }),
    200,
  )
  assert.equal(await call(media), 401)
  assert.equal(await call(media, { headers: { authorization: `Bearer ${INBOUND_KEYS[0]}x` } }), 401)
  assert.equal(await call(media, { headers: { authorization: `Basic ${INBOUND_KEYS[0]}` } }), 401)
  assert.equal(await call(`${proxy.mediaUrl}/media/not-a-uuid`, { headers: good }), 400)
  assert.equal(await call(media, { method: 'DELETE', headers: good }), 405)
  assert.equal(await call(`${proxy.mediaUrl}/elsewhere`, { headers: good }), 404)
  assert.equal(await call(`${proxy.mediaUrl}/media/${MEDIA_ID.replace('1b', '2b')}`, { headers: good }), 404)
  emulator.faults.push({ status: 429, retryAfter: '3' })
  assert.equal(await call(media, { headers: good }), 429)
  emulator.faults.push({ status: 503 })
  assert.equal(await call(media, { headers: good }), 200)
  emulator.faults.push({ status: 503 }, { status: 503 }, { status: 503 })
  assert.equal(await call(media, { headers: good }), 502)
  emulator.faults.push({ status: 401 }, { status: 401 })
  assert.equal(await call(media, { headers: good }), 502)
  emulator.faults.push({ headersDelayMs: 3_000 })
  assert.equal(await call(media, { headers: good }), 504)
  emulator.faults.push({ resetAfterBytes: 1000 })
  await assert.rejects(call(media, { headers: good }))
  // A client that leaves mid-body.
  await new Promise<void>((resolve) => {
    const req = httpRequest(`${proxy.mediaUrl}/media/${BIG_ID}`, { headers: good }, (res) => {
      res.once('data', () => {
        req.destroy()
        resolve()
      })
    })
    req.end()
  })
  // A revoked token: refreshed once, then served.
  const lastJti = emulator.requests.findLast((r) => r.jti)?.jti
  if (lastJti) emulator.revokedTokenIds.add(lastJti)
  assert.equal(await call(media, { headers: good }), 200)
  assert.equal(await call(`${proxy.adminUrl}/metrics`), 200)
  assert.equal(await call(`${proxy.adminUrl}/readyz`), 200)
  await waitFor(() => (proxy.stdout().match(/"request completed"/g) ?? []).length >= 18, 'every access line')

  const tokens = emulator.requests
    .map((r) => r.headers.authorization?.replace(/^Bearer /, ''))
    .filter((token): token is string => Boolean(token))
  assert.ok(tokens.length >= 10, 'the emulator saw the proxy tokens')
  const signatures = tokens.map((token) => token.split('.')[2] as string)
  const secrets = [...tokens, ...signatures, ...pemFragments(keys.pkcs8), ...INBOUND_KEYS]

  const output = { stdout: proxy.stdout(), stderr: proxy.stderr(), responses: responses.join('\n') }
  assert.ok(output.stdout.length > 0)
  for (const [where, text] of Object.entries(output)) {
    const hits = secrets.filter((secret) => text.includes(secret))
    assert.deepEqual(hits, [], `${where} contains a secret`)
    assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}\.eyJ/, `${where} contains something shaped like a JWT`)
  }
  // The inbound keys never went upstream either.
  for (const r of emulator.requests) {
    assert.ok(!JSON.stringify(r.headers).includes('client-key'), 'an inbound key reached upstream')
    assert.ok(!r.url.includes('?'), 'a query string reached upstream')
  }
})
