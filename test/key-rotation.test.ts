// Replacing the key file (rename, or a Kubernetes-style ..data symlink swap) switches every
// request to tokens signed by the new key within 5 s, with no failed request; an invalid
// replacement is refused, counted and logged, and the old key stays in use.
import assert from 'node:assert/strict'
import { type KeyObject, verify } from 'node:crypto'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import {
  APPLICATION_ID,
  keys,
  MEDIA_ID,
  makeKeys,
  type RunningProxy,
  startEmulator,
  startProxy,
  waitFor,
} from './helpers.js'

const newKeys = makeKeys()

function signedBy(authorization: string | undefined, publicKey: KeyObject): boolean {
  const [header, claims, signature] = (authorization ?? '').replace(/^Bearer /, '').split('.')
  if (!header || !claims || !signature) return false
  return verify('RSA-SHA256', Buffer.from(`${header}.${claims}`), publicKey, Buffer.from(signature, 'base64url'))
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'key-rotation-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function setup(t: TestContext, keyPath: string): Promise<{ emulator: VonageEmulator; proxy: RunningProxy }> {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 512)
  // During a rotation Vonage would accept the new key; keep the old one too so that the
  // steady client below measures the proxy, not the emulator.
  emulator.setPublicKeys(keys.publicKey, newKeys.publicKey)
  const proxy = await startProxy(t, emulator.url, { VONAGE_PRIVATE_KEY: '', VONAGE_PRIVATE_KEY_PATH: keyPath })
  return { emulator, proxy }
}

/** Requests one after another until stopped; every status is kept. */
function steadyClient(url: string): { stop: () => Promise<number[]> } {
  const statuses: number[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      const res = await request(url)
      await res.body.arrayBuffer()
      statuses.push(res.statusCode)
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      return statuses
    },
  }
}

async function metricValue(proxy: RunningProxy, series: string): Promise<number> {
  const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line ? Number(line.split(' ')[1]) : Number.NaN
}

async function rotatesTo(emulator: VonageEmulator, proxy: RunningProxy): Promise<void> {
  await waitFor(
    async () => {
      const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
      await res.body.arrayBuffer()
      return signedBy(emulator.requests.at(-1)?.headers.authorization, newKeys.publicKey)
    },
    'a request signed with the new key',
    5_000,
  )
}

test('a key file replaced by rename is used within 5 s, with no failed request', async (t) => {
  const dir = tempDir(t)
  const keyPath = join(dir, 'private.key')
  writeFileSync(keyPath, keys.pkcs8)
  const { emulator, proxy } = await setup(t, keyPath)

  const client = steadyClient(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await waitFor(() => emulator.requests.length >= 5, 'traffic before the rotation')
  assert.ok(signedBy(emulator.requests[0]?.headers.authorization, keys.publicKey))

  writeFileSync(join(dir, 'private.key.new'), newKeys.pkcs1)
  renameSync(join(dir, 'private.key.new'), keyPath)
  await rotatesTo(emulator, proxy)
  const seen = emulator.requests.length
  await waitFor(() => emulator.requests.length >= seen + 5, 'traffic after the rotation')
  const statuses = await client.stop()

  assert.ok(statuses.length > 10)
  assert.deepEqual(
    statuses.filter((status) => status !== 200),
    [],
  )
  // Once the new key is in use, the old one never signs again.
  const firstNew = emulator.requests.findIndex((r) => signedBy(r.headers.authorization, newKeys.publicKey))
  for (const r of emulator.requests.slice(firstNew)) assert.ok(signedBy(r.headers.authorization, newKeys.publicKey))
  assert.equal(
    await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="success"}`),
    1,
  )
})

test('a Kubernetes secret update (..data symlink swap) is picked up', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, '..2026_11_28_01'))
  writeFileSync(join(dir, '..2026_11_28_01', 'private.key'), keys.pkcs8)
  symlinkSync('..2026_11_28_01', join(dir, '..data'))
  symlinkSync('..data/private.key', join(dir, 'private.key'))
  const { emulator, proxy } = await setup(t, join(dir, 'private.key'))

  const before = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await before.body.arrayBuffer()
  assert.equal(before.statusCode, 200)

  // What the kubelet does: write the new version beside the old, then swap ..data atomically.
  mkdirSync(join(dir, '..2026_11_28_02'))
  writeFileSync(join(dir, '..2026_11_28_02', 'private.key'), newKeys.pkcs8)
  symlinkSync('..2026_11_28_02', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  rmSync(join(dir, '..2026_11_28_01'), { recursive: true })

  await rotatesTo(emulator, proxy)
  assert.equal(
    await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="success"}`),
    1,
  )
})

test('an invalid replacement is refused and logged; the old key stays in use', async (t) => {
  const dir = tempDir(t)
  const keyPath = join(dir, 'private.key')
  writeFileSync(keyPath, keys.pkcs8)
  const { emulator, proxy } = await setup(t, keyPath)

  writeFileSync(keyPath, '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n')
  await waitFor(
    async () =>
      (await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="failure"}`)) ===
      1,
    'the refused reload to be counted',
  )
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await res.body.arrayBuffer()
  assert.equal(res.statusCode, 200)
  assert.ok(signedBy(emulator.requests.at(-1)?.headers.authorization, keys.publicKey))
  assert.equal(
    await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="success"}`),
    0,
  )
  const refusal = proxy.logs.find((line) => line.msg === 'private key replacement refused; keeping the old key')
  assert.ok(refusal, 'the refusal is logged')
  assert.equal(refusal.level, 50)
  assert.ok(!proxy.rawLogs().includes('not a key'), 'the file content is never logged')

  // A valid key written later is still picked up.
  writeFileSync(keyPath, newKeys.pkcs8)
  await rotatesTo(emulator, proxy)
})

test('a deleted key file is logged and counted as a failed reload; the key in use stays, and its return is picked up', async (t) => {
  const dir = tempDir(t)
  const keyPath = join(dir, 'private.key')
  writeFileSync(keyPath, keys.pkcs8)
  const { emulator, proxy } = await setup(t, keyPath)
  const failures = await metricValue(
    proxy,
    `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="failure"}`,
  )

  rmSync(keyPath)
  await waitFor(
    async () =>
      (await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="failure"}`)) ===
      failures + 1,
    'the missing key file to be counted',
  )
  const warning = proxy.logs.find((line) => String(line.reason ?? '').includes('ENOENT'))
  assert.ok(warning, 'a log line names the missing file')
  assert.equal(warning.path, keyPath)
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await res.body.arrayBuffer()
  assert.equal(res.statusCode, 200, 'the key in use still signs')

  writeFileSync(keyPath, newKeys.pkcs8)
  await waitFor(async () => {
    const next = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    await next.body.arrayBuffer()
    return signedBy(emulator.requests.at(-1)?.headers.authorization, newKeys.publicKey)
  }, 'the new key file to be used')
  assert.equal(
    await metricValue(proxy, `media_proxy_key_reloads_total{application="${APPLICATION_ID}",result="failure"}`),
    failures + 1,
    'reported once',
  )
})
