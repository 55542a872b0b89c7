// SIGTERM, SIGINT and POST /quitquitquit drain the real process: /readyz turns 503 at once,
// new connections are refused, in-flight downloads finish intact, then exit 0; past
// SHUTDOWN_GRACE_MS the rest are cut (and logged as aborted); a second signal exits at once.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { request } from 'undici'
import { syntheticStream } from '../src/emulator/media-store.js'
import { MEDIA_ID, pausedDownload, proxyEnv, spawnProxy, startEmulator, waitFor } from './helpers.js'

const SIZE = 16 * 1024 * 1024

/** Resumes reading; resolves with the sha256 and length, or rejects if the body is cut. */
function drain(res: IncomingMessage): Promise<{ sha256: string; length: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    let length = 0
    res.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      length += chunk.length
    })
    res.once('end', () => resolve({ sha256: hash.digest('hex'), length }))
    res.once('error', reject)
    res.once('aborted', () => reject(new Error('aborted')))
    res.resume()
  })
}

async function expectedSha256(size: number): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of syntheticStream(0, size - 1)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function refusesConnections(url: string): Promise<boolean> {
  try {
    const res = await request(url, { reset: true })
    await res.body.arrayBuffer()
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED'
  }
}

async function readyStatus(adminUrl: string): Promise<number> {
  const res = await request(`${adminUrl}/readyz`, { reset: true })
  await res.body.arrayBuffer()
  return res.statusCode
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: readiness fails at once, new connections are refused, the download in flight completes, exit 0`, async (t) => {
    const emulator = await startEmulator(t)
    emulator.media.addSynthetic(MEDIA_ID, SIZE)
    const proxy = await spawnProxy(t, proxyEnv(emulator.url, { SHUTDOWN_GRACE_MS: '10000' }))
    assert.equal(await readyStatus(proxy.adminUrl), 200)

    const download = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    proxy.child.kill(signal)
    await waitFor(async () => (await readyStatus(proxy.adminUrl)) === 503, '/readyz to turn 503', 2_000)
    await waitFor(() => refusesConnections(`${proxy.mediaUrl}/media/${MEDIA_ID}`), 'new connections refused', 2_000)
    assert.equal(proxy.child.exitCode, null, 'still running while the download is in flight')

    const { sha256, length } = await drain(download)
    assert.equal(length, SIZE)
    assert.equal(sha256, await expectedSha256(SIZE))
    assert.equal(await proxy.exited, 0)
  })
}

test('past SHUTDOWN_GRACE_MS the remaining response is cut, logged as aborted, and the exit is still 0', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await spawnProxy(t, proxyEnv(emulator.url, { SHUTDOWN_GRACE_MS: '300' }))
  const download = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)

  proxy.child.kill('SIGTERM')
  assert.equal(await proxy.exited, 0)
  await assert.rejects(drain(download))
  const access = proxy
    .stdout()
    .split('\n')
    .filter((line) => line.includes('"request completed"'))
    .map((line) => JSON.parse(line) as { status: number; aborted: boolean; bytes: number })
  assert.equal(access.length, 1)
  assert.equal(access[0]?.aborted, true)
  assert.ok((access[0]?.bytes ?? SIZE) < SIZE)
})

test('POST /quitquitquit answers 202 and drains like SIGTERM', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await spawnProxy(t, proxyEnv(emulator.url))
  const download = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)

  const res = await request(`${proxy.adminUrl}/quitquitquit`, { method: 'POST', reset: true })
  await res.body.arrayBuffer()
  assert.equal(res.statusCode, 202)
  await waitFor(async () => (await readyStatus(proxy.adminUrl)) === 503, '/readyz to turn 503', 2_000)
  assert.equal((await drain(download)).length, SIZE)
  assert.equal(await proxy.exited, 0)
})

test('a second signal exits at once, without waiting for the drain, logging the downloads it cut', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await spawnProxy(t, proxyEnv(emulator.url, { SHUTDOWN_GRACE_MS: '60000' }))
  const downloads = await Promise.all(
    Array.from({ length: 5 }, () => pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)),
  )
  for (const download of downloads) download.on('error', () => undefined)

  proxy.child.kill('SIGTERM')
  await waitFor(async () => (await readyStatus(proxy.adminUrl)) === 503, 'the drain to start', 2_000)
  const started = Date.now()
  proxy.child.kill('SIGTERM')
  const code = await proxy.exited
  assert.notEqual(code, 0)
  assert.ok(Date.now() - started < 2_000)
  const cut = proxy
    .stdout()
    .split('\n')
    .filter((line) => line.includes('"msg":"request completed"'))
    .map((line) => JSON.parse(line) as { aborted: boolean })
  assert.equal(cut.length, 5, 'every download it cut has its access line')
  assert.ok(cut.every((line) => line.aborted))
})

test('a SIGTERM after POST /quitquitquit does not cut the drain short', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const proxy = await spawnProxy(t, proxyEnv(emulator.url))
  const download = await pausedDownload(`${proxy.mediaUrl}/media/${MEDIA_ID}`)

  for (let i = 0; i < 2; i++) {
    const res = await request(`${proxy.adminUrl}/quitquitquit`, { method: 'POST', reset: true })
    await res.body.arrayBuffer()
    assert.equal(res.statusCode, 202)
  }
  proxy.child.kill('SIGTERM')
  await waitFor(() => proxy.stdout().includes('"already shutting down"'), 'the SIGTERM to be noted', 2_000)
  assert.equal(proxy.child.exitCode, null, 'still draining')
  assert.equal((await drain(download)).length, SIZE)
  assert.equal(await proxy.exited, 0)
})
