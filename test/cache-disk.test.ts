// The cache's files on disk: they survive a restart, a crash (SIGKILL) mid-store leaves nothing
// that is ever served, least recently used files are evicted beyond CACHE_MAX_BYTES (never
// under a reader), and a full or read-only disk leaves downloads working, uncached.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { cacheDir, get, mediaRequests, synthetic } from './cache-helpers.js'
import {
  APPLICATION_ID,
  MEDIA_ID,
  pausedDownload,
  proxyEnv,
  spawnProxy,
  startEmulator,
  startProxy,
  waitFor,
} from './helpers.js'

const ID_B = '2c567610-085d-4569-bbfb-56fd59b5e087'
const ID_C = '3d678721-196e-467a-8c0c-67fe6ac6f198'

/**
 * The files in tmp/ being written: those with bytes in them (the proxy keeps a few empty ones
 * made ahead, see DiskStore.takeTemp).
 */
function storing(dir: string): Array<{ name: string; size: number }> {
  return readdirSync(join(dir, 'tmp'))
    .map((name) => ({ name, size: statSync(join(dir, 'tmp', name)).size }))
    .filter((file) => file.size > 0)
}

/** The client may have its last byte a moment before the file is renamed into data/. */
async function stored(dataDir: string, count: number): Promise<void> {
  await waitFor(() => (readdirSync(dataDir).length === count ? true : undefined), `${count} stored file(s)`)
}

async function metric(adminUrl: string, pattern: RegExp): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text()
  const match = pattern.exec(text)
  return match ? Number(match[1]) : Number.NaN
}

/** A tmpfs of this size mounted at a fresh directory, or a reason it cannot be (not root...). */
function tinyFilesystem(t: TestContext, size: string): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch {
    rmSync(dir, { recursive: true, force: true })
    t.skip('mounting a tmpfs needs root (CAP_SYS_ADMIN): the full and read-only disk cases are not run')
    return undefined
  }
  t.after(() => {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' })
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

test('stored files survive a restart: the index is rebuilt from the directory', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100_000)
  const dir = cacheDir(t)
  const first = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  assert.equal((await get(`${first.mediaUrl}/media/${MEDIA_ID}`)).status, 200)
  await stored(join(dir, 'data'), 1)
  await first.app.close(0)

  const second = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  const hit = await get(`${second.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(hit.headers['cache-status'], 'vonage-media-proxy; hit')
  assert.ok(hit.body.equals(await synthetic(100_000)))
  assert.equal(mediaRequests(emulator).length, 1)
  assert.ok(second.logs.some((line) => line.msg === 'cache opened' && line.files === 1))
})

test('a damaged stored file is never served: it is removed and fetched again', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100_000)
  const dir = cacheDir(t)
  const first = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  await get(`${first.mediaUrl}/media/${MEDIA_ID}`)
  await stored(join(dir, 'data'), 1)
  await first.app.close(0)
  const [name] = readdirSync(join(dir, 'data'))
  const path = join(dir, 'data', name as string)
  truncateSync(path, statSync(path).size - 10)
  // And a stray file that is no cache file at all.
  writeFileSync(join(dir, 'data', 'stray.txt'), 'hello')

  const second = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  const again = await get(`${second.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(again.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  assert.ok(again.body.equals(await synthetic(100_000)))
  assert.equal(mediaRequests(emulator).length, 2)
  assert.deepEqual(readdirSync(join(dir, 'data')), [name])
})

test('SIGKILL in the middle of a store: after a restart nothing partial is served, and the file is fetched whole', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 2 * 1024 * 1024)
  const dir = cacheDir(t)
  const env = proxyEnv(emulator.url, { CACHE_DIR: dir })
  const proxy = await spawnProxy(t, env)
  // Slow: 64 KiB every 50 ms (1.6 s for the file), so the kill lands mid-body.
  emulator.faults.push({ dripDelayMs: 50, dripBytes: 64 * 1024 })
  const download = (async () => {
    try {
      const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
      await res.body.arrayBuffer()
      return 'complete'
    } catch {
      return 'failed'
    }
  })()
  await waitFor(() => {
    const [partial] = storing(dir)
    return partial !== undefined && partial.size > 200_000 ? true : undefined
  }, 'a partly written file in tmp/')
  proxy.child.kill('SIGKILL')
  await proxy.exited
  assert.equal(await download, 'failed')
  assert.deepEqual(readdirSync(join(dir, 'data')), [], 'nothing partial was moved into the store')

  const restarted = await spawnProxy(t, env)
  assert.deepEqual(storing(dir), [], 'tmp/ is emptied at start (what is there now is empty, made ahead)')
  const whole = await get(`${restarted.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(whole.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  assert.ok(whole.body.equals(await synthetic(2 * 1024 * 1024)))
  assert.equal(
    (await get(`${restarted.mediaUrl}/media/${MEDIA_ID}`)).headers['cache-status'],
    'vonage-media-proxy; hit',
  )
})

test('beyond CACHE_MAX_BYTES the least recently used file is evicted; a file being read is still read whole', async (t) => {
  const emulator = await startEmulator(t)
  for (const id of [MEDIA_ID, ID_B, ID_C]) emulator.media.addSynthetic(id, 1024 * 1024)
  const dir = cacheDir(t)
  // Room for two files of 1 MiB (plus their headers), not three.
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir, CACHE_MAX_BYTES: String(2.5 * 1024 * 1024) })
  const url = (id: string) => `${proxy.mediaUrl}/media/${id}`
  await get(url(MEDIA_ID))
  await get(url(ID_B))
  // MEDIA_ID is used again, so ID_B is now the least recently used.
  assert.equal((await get(url(MEDIA_ID))).headers['cache-status'], 'vonage-media-proxy; hit')
  // A client starts reading MEDIA_ID and stops: its file is evicted under it below.
  const reader = await pausedDownload(url(MEDIA_ID))
  await get(url(ID_C))
  await get(url(ID_B)) // evicts MEDIA_ID, read least recently
  assert.equal(readdirSync(join(dir, 'data')).length, 2)
  assert.equal(await metric(proxy.adminUrl, /^media_proxy_cache_evictions_total (\d+)/m), 2)
  assert.ok((await metric(proxy.adminUrl, /^media_proxy_cache_stored_bytes (\d+)/m)) <= 2.5 * 1024 * 1024)
  assert.equal((await get(url(ID_C))).headers['cache-status'], 'vonage-media-proxy; hit')

  const chunks: Buffer[] = []
  reader.on('data', (chunk: Buffer) => chunks.push(chunk))
  reader.resume()
  await new Promise((resolve) => reader.on('end', resolve))
  assert.ok(Buffer.concat(chunks).equals(await synthetic(1024 * 1024)), 'the evicted file was read whole')
})

test('a full disk: downloads keep working uncached, and the write failures are counted', async (t) => {
  const dir = tinyFilesystem(t, '1m')
  if (!dir) return
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 2 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  for (let i = 0; i < 2; i++) {
    const response = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    assert.equal(response.status, 200)
    assert.equal(response.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss')
    assert.ok(response.body.equals(await synthetic(2 * 1024 * 1024)))
  }
  assert.equal(await metric(proxy.adminUrl, /^media_proxy_cache_write_failures_total (\d+)/m), 2)
  assert.equal(proxy.logs.filter((line) => /cannot store files/.test(String(line.msg))).length, 1, 'warned once')
  const post = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, {}, 'POST')
  assert.equal(post.status, 503)
  assert.equal(JSON.parse(post.body.toString()).type, 'urn:vonage-media-proxy:problem:cache-write-failed')
})

test('a disk that fills up mid-store: the download is cut (never whole-looking), nothing is stored, the next works', async (t) => {
  const dir = tinyFilesystem(t, '40m')
  if (!dir) return
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 8 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  emulator.faults.push({ dripDelayMs: 10, dripBytes: 256 * 1024 })
  const download = get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  await waitFor(() => (storing(dir).length === 1 ? true : undefined), 'the store to begin')
  // Something else takes the rest of the disk.
  try {
    writeFileSync(join(dir, 'filler'), Buffer.alloc(39 * 1024 * 1024))
  } catch {
    // ENOSPC once it is full: that is the point.
  }
  await assert.rejects(download, 'a body the disk could not take is cut, never ended as if whole')
  assert.deepEqual(readdirSync(join(dir, 'data')), [])
  await waitFor(() => (storing(dir).length === 0 ? true : undefined), 'the partial file removed')
  const next = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(next.status, 200)
  assert.ok(next.body.equals(await synthetic(8 * 1024 * 1024)))
  assert.ok((await metric(proxy.adminUrl, /^media_proxy_cache_write_failures_total (\d+)/m)) >= 1)
})

test('a read-only cache directory: stored files are still served, new ones are served uncached', async (t) => {
  const dir = tinyFilesystem(t, '64m')
  if (!dir) return
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100_000)
  emulator.media.addSynthetic(ID_B, 100_000)
  mkdirSync(join(dir, 'cache'))
  const cache = join(dir, 'cache')
  const first = await startProxy(t, emulator.url, { CACHE_DIR: cache, CACHE_MAX_BYTES: '1000000' })
  await get(`${first.mediaUrl}/media/${MEDIA_ID}`)
  await stored(join(cache, 'data'), 1)
  await first.app.close(0)
  execFileSync('mount', ['-o', 'remount,ro', dir], { stdio: 'pipe' })

  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cache, CACHE_MAX_BYTES: '1000000' })
  assert.ok(proxy.logs.some((line) => /cannot be written/.test(String(line.msg))))
  const hit = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(hit.headers['cache-status'], 'vonage-media-proxy; hit')
  const uncached = await get(`${proxy.mediaUrl}/media/${ID_B}`)
  assert.equal(uncached.status, 200)
  assert.equal(uncached.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss')
  assert.ok(uncached.body.equals(await synthetic(100_000)))
  assert.ok((await metric(proxy.adminUrl, /^media_proxy_cache_write_failures_total (\d+)/m)) >= 1)
  execFileSync('mount', ['-o', 'remount,rw', dir], { stdio: 'pipe' })
})

test('a CACHE_DIR that cannot be created is exit 78 naming the setting', async (t) => {
  const dir = cacheDir(t)
  writeFileSync(join(dir, 'file'), '')
  const emulator = await startEmulator(t)
  const { runMain } = await import('./helpers.js')
  const result = await runMain([], proxyEnv(emulator.url, { CACHE_DIR: join(dir, 'file', 'cache') }))
  assert.equal(result.code, 78)
  assert.match(result.stderr, /^config error: CACHE_DIR .*cannot be created \(ENOTDIR\)$/m)
  void APPLICATION_ID
})
