// Proves several Vonage applications in one proxy: keys from VONAGE_APPLICATIONS_DIR, the
// application chosen by the Vonage-Application-Id header (never forwarded) or the default,
// client keys scoped to applications (a key for A never obtains B's media), one token per
// application (a 401 drops only that one), keys added, replaced, refused and removed while
// the others serve, readiness without a default, and the application in metrics and logs.
import assert from 'node:assert/strict'
import { type KeyObject, verify } from 'node:crypto'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import {
  accessLines,
  MEDIA_ID,
  makeKeys,
  type RunningProxy,
  runMain,
  startEmulator,
  startProxy,
  type TestKeys,
  waitFor,
} from './helpers.js'

const A = 'a0000000-0000-4000-8000-00000000000a'
const B = 'b0000000-0000-4000-8000-00000000000b'
const C = 'c0000000-0000-4000-8000-00000000000c'
const KEY_A_ONLY = 'client-key-for-application-a-only'
const KEY_ALL = 'client-key-for-every-application'
const appKeys: Record<string, TestKeys> = { [A]: makeKeys(), [B]: makeKeys(), [C]: makeKeys() }

function keyDir(t: TestContext, ids: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-applications-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const id of ids) writeFileSync(join(dir, `${id}.pem`), appKeys[id]?.pkcs8 ?? '')
  writeFileSync(join(dir, 'README.txt'), 'not a key')
  return dir
}

/** A settings file beside the key directory: KEY_A_ONLY may use A alone, KEY_ALL every application. */
function scopedKeysFile(t: TestContext, dir: string): string {
  const settings = join(dir, '..', `${dir.split('/').at(-1)}-settings.yaml`)
  writeFileSync(settings, `INBOUND_API_KEYS:\n  - key: ${KEY_A_ONLY}\n    applications: [${A}]\n  - ${KEY_ALL}\n`)
  t.after(() => rmSync(settings, { force: true }))
  return settings
}

async function setup(t: TestContext, ids: string[], env: Record<string, string> = {}) {
  const dir = keyDir(t, ids)
  const emulator = await startEmulator(t, { applicationId: A, publicKey: (appKeys[A] as TestKeys).publicKey })
  for (const id of [B, C]) emulator.addApplication(id, (appKeys[id] as TestKeys).publicKey)
  emulator.media.addSynthetic(MEDIA_ID, 2048)
  // Empty is unset: no single-application key, and no default unless env names one.
  const proxy = await startProxy(
    t,
    emulator.url,
    { VONAGE_APPLICATIONS_DIR: dir, VONAGE_APPLICATION_ID: '', VONAGE_PRIVATE_KEY: '', ...env },
    { keyPollIntervalMs: 200 },
  )
  return { dir, emulator, proxy }
}

async function get(proxy: RunningProxy, headers: Record<string, string> = {}) {
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { headers })
  const body = await res.body.text()
  return { status: res.statusCode, body }
}

function signedBy(authorization: string | undefined, key: KeyObject): boolean {
  const [header, claims, signature] = (authorization ?? '').replace(/^Bearer /, '').split('.')
  if (!header || !claims || !signature) return false
  return verify('RSA-SHA256', Buffer.from(`${header}.${claims}`), key, Buffer.from(signature, 'base64url'))
}

function last(emulator: VonageEmulator) {
  const recorded = emulator.requests.at(-1)
  assert.ok(recorded)
  return recorded
}

async function metric(proxy: RunningProxy, pattern: RegExp): Promise<number> {
  const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
  const line = text.split('\n').find((l) => pattern.test(l))
  return line === undefined ? Number.NaN : Number(line.split(' ').at(-1))
}

test('the header chooses the application; without a default, no header is 400; the header never goes upstream', async (t) => {
  const { emulator, proxy } = await setup(t, [A, B])
  assert.equal((await request(`${proxy.adminUrl}/readyz`)).statusCode, 200, 'ready with keys loaded and no default')

  assert.equal((await get(proxy)).status, 400)
  for (const id of [A, B.toUpperCase()]) {
    const res = await get(proxy, { 'vonage-application-id': id })
    assert.equal(res.status, 200, id)
    const upstream = last(emulator)
    assert.equal(upstream.application, id.toLowerCase())
    assert.ok(signedBy(upstream.headers.authorization, (appKeys[id.toLowerCase()] as TestKeys).publicKey))
    assert.equal(upstream.headers['vonage-application-id'], undefined)
  }
  for (const id of [C, 'not-a-uuid', '']) {
    const res = await get(proxy, { 'vonage-application-id': id })
    assert.equal(res.status, 400, `"${id}"`)
  }
  assert.equal(emulator.requests.length, 2, 'nothing else went upstream')

  const lines = accessLines(proxy).filter((line) => line.status === 200)
  assert.deepEqual(
    lines.map((line) => line.application),
    [A, B],
  )
  assert.equal(await metric(proxy, /^media_proxy_applications_loaded /), 2)
  assert.equal(
    await metric(proxy, new RegExp(`^media_proxy_token_refreshes_total\\{application="${B}",result="success"\\}`)),
    1,
  )
  assert.ok(
    proxy.logs.some((line) => line.file === 'README.txt' && line.level === 40),
    'the stray file is warned about',
  )
})

test('VONAGE_APPLICATION_ID names the default, whose key may come from the directory; without its key, not ready', async (t) => {
  const { dir, emulator, proxy } = await setup(t, [A, B], { VONAGE_APPLICATION_ID: B })
  assert.equal((await get(proxy)).status, 200)
  assert.equal(last(emulator).application, B)
  assert.equal((await get(proxy, { 'vonage-application-id': A })).status, 200)
  assert.equal(last(emulator).application, A)

  // The default's key removed: requests that name no application are 400, and not ready.
  rmSync(join(dir, `${B}.pem`))
  await waitFor(async () => (await get(proxy)).status === 400, 'the default gone', 5_000)
  assert.equal((await request(`${proxy.adminUrl}/readyz`)).statusCode, 503)
  assert.equal((await get(proxy, { 'vonage-application-id': A })).status, 200)
})

test('a client key scoped to A can never obtain B: 403 and nothing sent; a plain key may use both', async (t) => {
  const dir = keyDir(t, [A, B])
  const settings = scopedKeysFile(t, dir)
  const emulator = await startEmulator(t, { applicationId: A, publicKey: (appKeys[A] as TestKeys).publicKey })
  emulator.addApplication(B, (appKeys[B] as TestKeys).publicKey)
  emulator.media.addSynthetic(MEDIA_ID, 2048)
  const proxy = await startProxy(t, emulator.url, {
    VONAGE_APPLICATIONS_DIR: dir,
    CONFIG_FILE: settings,
    VONAGE_APPLICATION_ID: A,
    VONAGE_PRIVATE_KEY: '',
  })

  const scoped = { authorization: `Bearer ${KEY_A_ONLY}` }
  assert.equal((await get(proxy, scoped)).status, 200, 'A through the default')
  assert.equal((await get(proxy, { ...scoped, 'vonage-application-id': A })).status, 200)
  const before = emulator.requests.length
  const refused = await get(proxy, { ...scoped, 'vonage-application-id': B })
  assert.equal(refused.status, 403)
  assert.match(refused.body, /application-forbidden/)
  assert.equal(emulator.requests.length, before, 'nothing sent for B')
  // The order of checks: a bad id is 400 and a wrong key 401 before the application is looked at.
  assert.equal(
    (await request(`${proxy.mediaUrl}/media/bad`, { headers: { ...scoped, 'vonage-application-id': B } })).statusCode,
    400,
  )
  assert.equal((await get(proxy, { 'vonage-application-id': B })).status, 401)
  assert.equal((await get(proxy, { authorization: `Bearer ${KEY_ALL}`, 'vonage-application-id': B })).status, 200)
  assert.equal(last(emulator).application, B)
})

test("a 401 drops only that application's token; the others keep theirs", async (t) => {
  const { emulator, proxy } = await setup(t, [A, B])
  await get(proxy, { 'vonage-application-id': A })
  await get(proxy, { 'vonage-application-id': B })
  const jtiA = emulator.requests[0]?.jti as string
  const jtiB = emulator.requests[1]?.jti as string
  emulator.revokedTokenIds.add(jtiA)
  assert.equal((await get(proxy, { 'vonage-application-id': A })).status, 200)
  assert.notEqual(last(emulator).jti, jtiA, 'A signed anew')
  assert.equal((await get(proxy, { 'vonage-application-id': B })).status, 200)
  assert.equal(last(emulator).jti, jtiB, 'B kept its token')
})

test('keys added, replaced, refused and removed are seen within 5 s while the other applications serve', async (t) => {
  const { dir, emulator, proxy } = await setup(t, [A, B])
  const newA = makeKeys()
  emulator.setPublicKeys((appKeys[A] as TestKeys).publicKey, newA.publicKey)

  // Replaced (by rename, as tools do): A's requests soon carry the new key's tokens.
  writeFileSync(join(dir, 'tmp-a'), newA.pkcs8)
  renameSync(join(dir, 'tmp-a'), join(dir, `${A}.pem`))
  await waitFor(
    async () => {
      await get(proxy, { 'vonage-application-id': A })
      return signedBy(last(emulator).headers.authorization, newA.publicKey)
    },
    "A's new key in use",
    5_000,
  )
  assert.equal((await get(proxy, { 'vonage-application-id': B })).status, 200, 'B serves throughout')

  // Refused: not a key. A keeps its key, the refusal is logged for A and counted.
  writeFileSync(join(dir, `${A}.pem`), 'not a pem')
  await waitFor(
    () =>
      proxy.logs.find((line) => line.msg?.toString().startsWith('application key refused') && line.application === A),
    'the refusal to be logged',
  )
  assert.equal((await get(proxy, { 'vonage-application-id': A })).status, 200)
  assert.ok(signedBy(last(emulator).headers.authorization, newA.publicKey))
  assert.ok(
    (await metric(proxy, new RegExp(`^media_proxy_key_reloads_total\\{application="${A}",result="failure"\\}`))) >= 1,
  )

  // Two files for one application, names differing in case: refused once, the key in use stays.
  const failures = await metric(
    proxy,
    new RegExp(`^media_proxy_key_reloads_total\\{application="${A}",result="failure"\\}`),
  )
  writeFileSync(join(dir, `${A.toUpperCase()}.pem`), (appKeys[C] as TestKeys).pkcs8)
  await waitFor(
    () => proxy.logs.find((line) => String(line.reason ?? '').includes('key files') && line.application === A),
    'the ambiguity to be logged',
  )
  await new Promise((resolve) => setTimeout(resolve, 600))
  assert.equal(
    await metric(proxy, new RegExp(`^media_proxy_key_reloads_total\\{application="${A}",result="failure"\\}`)),
    failures + 1,
    'reported once, not at every poll',
  )
  assert.equal((await get(proxy, { 'vonage-application-id': A })).status, 200)
  assert.ok(signedBy(last(emulator).headers.authorization, newA.publicKey), "A's key did not flap")
  rmSync(join(dir, `${A.toUpperCase()}.pem`))

  // Added: C serves. Removed: B no longer does.
  writeFileSync(join(dir, `${C}.pem`), (appKeys[C] as TestKeys).pkcs8)
  rmSync(join(dir, `${B}.pem`))
  await waitFor(async () => (await get(proxy, { 'vonage-application-id': C })).status === 200, 'C served', 5_000)
  await waitFor(async () => (await get(proxy, { 'vonage-application-id': B })).status === 400, 'B gone', 5_000)
  assert.equal(await metric(proxy, /^media_proxy_applications_loaded /), 2)
})

test('start-up: a default application without a key, or an unreadable directory, is exit 78 naming the setting', async (t) => {
  const dir = keyDir(t, [A])
  const env = {
    VONAGE_APPLICATIONS_DIR: dir,
    VONAGE_APPLICATION_ID: B,
    UPSTREAM_BASE_URL: 'http://127.0.0.1:9',
    PORT: '0',
    ADMIN_PORT: '0',
  }
  const missing = await runMain(['--check-config'], env)
  assert.equal(missing.code, 78)
  assert.match(missing.stderr, /VONAGE_APPLICATION_ID .* has no key/)
  const unreadable = await runMain(['--check-config'], { ...env, VONAGE_APPLICATIONS_DIR: join(dir, 'nope') })
  assert.equal(unreadable.code, 78)
  assert.match(unreadable.stderr, /VONAGE_APPLICATIONS_DIR cannot be read/)
  const ok = await runMain(['--check-config'], { ...env, VONAGE_APPLICATION_ID: A })
  assert.equal(ok.code, 0, ok.stderr)
  assert.match(ok.stdout, /1 application key\(s\) loaded/)
})

test('with a cache, a stored file is still per application, and a key scoped to A gets 403 for a hit of B', async (t) => {
  const dir = keyDir(t, [A, B])
  const settings = scopedKeysFile(t, dir)
  const cache = mkdtempSync(join(tmpdir(), 'vmp-app-cache-'))
  t.after(() => rmSync(cache, { recursive: true, force: true }))
  const emulator = await startEmulator(t, { applicationId: A, publicKey: (appKeys[A] as TestKeys).publicKey })
  emulator.addApplication(B, (appKeys[B] as TestKeys).publicKey)
  emulator.media.addSynthetic(MEDIA_ID, 2048)
  const proxy = await startProxy(t, emulator.url, {
    VONAGE_APPLICATIONS_DIR: dir,
    CONFIG_FILE: settings,
    VONAGE_APPLICATION_ID: A,
    VONAGE_PRIVATE_KEY: '',
    CACHE_DIR: cache,
  })
  const all = { authorization: `Bearer ${KEY_ALL}`, 'vonage-application-id': B }
  const stored = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { headers: all })
  await stored.body.arrayBuffer()
  assert.equal(stored.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  const hit = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { headers: all })
  await hit.body.arrayBuffer()
  assert.equal(hit.headers['cache-status'], 'vonage-media-proxy; hit')
  const before = emulator.requests.length

  const scopedForB = await get(proxy, { authorization: `Bearer ${KEY_A_ONLY}`, 'vonage-application-id': B })
  assert.equal(scopedForB.status, 403)
  assert.match(scopedForB.body, /application-forbidden/)
  // A's copy is A's own: fetched with A's token, not B's file.
  const forA = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, {
    headers: { authorization: `Bearer ${KEY_A_ONLY}` },
  })
  await forA.body.arrayBuffer()
  assert.equal(forA.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  assert.equal(emulator.requests.length, before + 1)
  assert.equal(last(emulator).application, A)
})
