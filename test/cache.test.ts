// Keeping a copy (CACHE_DIR): a complete 200 is stored on disk as it streams, later requests
// (Range and conditional ones included) are answered from the disk, concurrent misses make one
// upstream request, POST stores now, and failed, cut, partial or error answers are never stored.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { test } from 'node:test'
import { request } from 'undici'
import { cacheDir, get, mediaRequests, synthetic } from './cache-helpers.js'
import { APPLICATION_ID, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const OTHER_ID = '2c567610-085d-4569-bbfb-56fd59b5e087'

test('a complete 200 is stored; the next GET is a hit from disk, with the same bytes and headers', async (t) => {
  const emulator = await startEmulator(t)
  const item = emulator.media.addSynthetic(MEDIA_ID, 300_000, { contentType: 'image/jpeg', fileName: 'photo.jpg' })
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/v3/media/${MEDIA_ID}`

  const first = await get(url)
  assert.equal(first.status, 200)
  assert.equal(first.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  assert.deepEqual(first.body, await synthetic(300_000))
  const second = await get(url)
  assert.equal(second.status, 200)
  assert.equal(second.headers['cache-status'], 'vonage-media-proxy; hit')
  assert.deepEqual(second.body, first.body)
  for (const name of ['content-type', 'content-length', 'etag', 'last-modified', 'content-disposition']) {
    assert.equal(second.headers[name], first.headers[name], name)
  }
  assert.equal(second.headers.etag, item.etag)
  assert.equal(second.headers['accept-ranges'], 'bytes')
  assert.equal(mediaRequests(emulator).length, 1, 'the hit asked nothing of Vonage')
  // /media/:id is the same file as /v3/media/:id.
  assert.equal((await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)).headers['cache-status'], 'vonage-media-proxy; hit')
  assert.equal(mediaRequests(emulator).length, 1)

  const lines = proxy.logs.filter((line) => line.msg === 'request completed')
  assert.deepEqual(
    lines.map((line) => line.cache),
    ['miss', 'hit', 'hit'],
  )
  assert.equal(lines[1]?.upstreamStatus, null)
  const metrics = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
  assert.match(metrics, /media_proxy_cache_requests_total\{result="hit"\} 2/)
  assert.match(metrics, /media_proxy_cache_requests_total\{result="miss"\} 1/)
  assert.match(metrics, /media_proxy_cache_stored_bytes \d{6}/)
})

test('hits answer HEAD, one Range (206), an unsatisfiable Range (416) and conditionals (304) from disk', async (t) => {
  const emulator = await startEmulator(t)
  const item = emulator.media.addSynthetic(MEDIA_ID, 10_000, {
    contentType: 'video/mp4',
    lastModified: new Date('2026-01-02T03:04:05Z'),
  })
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`
  await get(url)

  const head = await get(url, {}, 'HEAD')
  assert.equal(head.status, 200)
  assert.equal(head.headers['content-length'], '10000')
  assert.equal(head.body.length, 0)
  assert.equal(head.headers['cache-status'], 'vonage-media-proxy; hit')

  const range = await get(url, { range: 'bytes=100-199' })
  assert.equal(range.status, 206)
  assert.equal(range.headers['content-range'], 'bytes 100-199/10000')
  assert.deepEqual(range.body, await synthetic(100, 100))
  const suffix = await get(url, { range: 'bytes=-10' })
  assert.equal(suffix.headers['content-range'], 'bytes 9990-9999/10000')
  assert.deepEqual(suffix.body, await synthetic(10, 9990))

  const unsatisfiable = await get(url, { range: 'bytes=20000-' })
  assert.equal(unsatisfiable.status, 416)
  assert.equal(unsatisfiable.headers['content-range'], 'bytes */10000')

  const matching = await get(url, { 'if-none-match': item.etag })
  assert.equal(matching.status, 304)
  assert.equal(matching.body.length, 0)
  assert.equal(matching.headers.etag, item.etag)
  assert.equal((await get(url, { 'if-none-match': '"other"' })).status, 200)
  assert.equal((await get(url, { 'if-modified-since': 'Sat, 03 Jan 2026 00:00:00 GMT' })).status, 304)
  assert.equal((await get(url, { 'if-modified-since': 'Thu, 01 Jan 2026 00:00:00 GMT' })).status, 200)
  // If-Range that no longer matches: the whole file.
  const stale = await get(url, { range: 'bytes=0-9', 'if-range': '"old"' })
  assert.equal(stale.status, 200)
  assert.equal(stale.body.length, 10_000)
  const fresh = await get(url, { range: 'bytes=0-9', 'if-range': item.etag })
  assert.equal(fresh.status, 206)

  assert.equal(mediaRequests(emulator).length, 1, 'every one of them was answered from disk')
})

test('concurrent misses for one file make one upstream request, and each gets the whole body', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 4 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`
  // Slow enough that all eight arrive while the first is still downloading.
  emulator.faults.push({ dripDelayMs: 5, dripBytes: 256 * 1024 })
  const responses = await Promise.all([
    ...Array.from({ length: 7 }, () => get(url)),
    get(url, { range: 'bytes=1000000-1000099' }),
  ])
  const expected = await synthetic(4 * 1024 * 1024)
  for (const response of responses.slice(0, 7)) {
    assert.equal(response.status, 200)
    assert.ok(response.body.equals(expected))
  }
  assert.equal(responses[7]?.status, 206)
  assert.deepEqual(responses[7]?.body, expected.subarray(1_000_000, 1_000_100))
  assert.equal(mediaRequests(emulator).length, 1)
  assert.equal(mediaRequests(emulator)[0]?.headers.range, undefined, 'the shared download is of the whole file')
})

test('failed, cut, partial, conditional and error answers are never stored', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 200_000)
  const dir = cacheDir(t)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`

  // An error (404) is relayed and not stored.
  const missing = await get(`${proxy.mediaUrl}/media/${OTHER_ID}`)
  assert.equal(missing.status, 404)
  assert.equal(missing.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss')
  // A body cut part-way: the client sees a cut, nothing is stored.
  emulator.faults.push({ resetAfterBytes: 100_000 })
  await assert.rejects(get(url))
  // A chunked 200 without a length cannot be checked: relayed, not stored.
  emulator.faults.push({ chunked: true })
  const chunked = await get(url)
  assert.equal(chunked.status, 200)
  assert.equal(chunked.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss')
  // HEAD and conditional requests for a file not stored go upstream as they are (bypass).
  assert.equal((await get(url, {}, 'HEAD')).status, 200)
  const conditional = await get(url, { 'if-none-match': '"nope"' })
  assert.equal(conditional.status, 200)
  assert.equal(readdirSync(join(dir, 'data')).length, 0)
  // Nothing partial left behind (the empty files the proxy makes ahead are not stores).
  await waitFor(
    () => readdirSync(join(dir, 'tmp')).every((name) => statSync(join(dir, 'tmp', name)).size === 0) || undefined,
    'temporary files removed',
  )

  // Then a clean download is stored.
  const clean = await get(url)
  assert.equal(clean.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss; stored')
  await waitFor(() => readdirSync(join(dir, 'data')).length === 1 || undefined, 'stored')
  assert.equal((await get(url)).headers['cache-status'], 'vonage-media-proxy; hit')
  const lines = proxy.logs.filter((line) => line.msg === 'request completed').map((line) => line.cache)
  assert.deepEqual(lines, ['miss', 'miss', 'miss', 'bypass', 'bypass', 'miss', 'hit'])
})

test('POST stores the file now: 201 with bytes, type and sha256; 200 once stored; upstream 404 stays 404', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 50_000, { contentType: 'audio/ogg' })
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/v3/media/${MEDIA_ID}`
  const sha256 = createHash('sha256')
    .update(await synthetic(50_000))
    .digest('hex')

  const created = await get(url, {}, 'POST')
  assert.equal(created.status, 201)
  assert.deepEqual(JSON.parse(created.body.toString()), { bytes: 50_000, contentType: 'audio/ogg', sha256 })
  const again = await get(url, {}, 'POST')
  assert.equal(again.status, 200)
  assert.deepEqual(JSON.parse(again.body.toString()), { bytes: 50_000, contentType: 'audio/ogg', sha256 })
  assert.equal(again.headers['cache-status'], 'vonage-media-proxy; hit')
  assert.equal((await get(url)).headers['cache-status'], 'vonage-media-proxy; hit')
  assert.equal(mediaRequests(emulator).length, 1)
  assert.equal(mediaRequests(emulator)[0]?.method, 'GET')

  const missing = await get(`${proxy.mediaUrl}/v3/media/${OTHER_ID}`, {}, 'POST')
  assert.equal(missing.status, 404)

  const put = await get(url, {}, 'PUT')
  assert.equal(put.status, 405)
  assert.equal(put.headers.allow, 'GET, HEAD, POST')
})

test('without a cache, POST is 405 with Allow: GET, HEAD, and no Cache-Status is sent', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1_000)
  const proxy = await startProxy(t, emulator.url)
  const url = `${proxy.mediaUrl}/v3/media/${MEDIA_ID}`
  const post = await get(url, {}, 'POST')
  assert.equal(post.status, 405)
  assert.equal(post.headers.allow, 'GET, HEAD')
  const ok = await get(url)
  assert.equal(ok.headers['cache-status'], undefined)
})

test('the key is application, host and path: a hit for one application is not served to another', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1_000)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/v3/media/${MEDIA_ID}`
  await get(url)
  assert.equal(
    (await get(url, { 'vonage-application-id': APPLICATION_ID })).headers['cache-status'],
    'vonage-media-proxy; hit',
  )
  // A recording with the same id is another file.
  emulator.files.addSynthetic(MEDIA_ID, 1_000)
  assert.equal(
    (await get(`${proxy.mediaUrl}/v1/files/${MEDIA_ID}`)).headers['cache-status'],
    'vonage-media-proxy; fwd=uri-miss; stored',
  )
})

test('a download being stored finishes after its only client leaves, and is then a hit', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024 * 1024)
  const dir = cacheDir(t)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  emulator.faults.push({ dripDelayMs: 10, dripBytes: 64 * 1024 })
  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  for await (const _chunk of res.body) break // the first chunk, then gone
  await waitFor(() => (readdirSync(join(dir, 'data')).length === 1 ? true : undefined), 'the file stored')
  const hit = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  assert.equal(hit.headers['cache-status'], 'vonage-media-proxy; hit')
  assert.ok(hit.body.equals(await synthetic(1024 * 1024)))
  assert.equal(mediaRequests(emulator).length, 1)
  const line = proxy.logs.find((entry) => entry.msg === 'request completed')
  assert.equal(line?.aborted, true)
})

test('clients that leave mid-hit, or pipeline hits they never read, leak no file descriptor', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 4 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`
  await get(url)
  await waitFor(() => (proxy.app.inFlight.count === 0 ? true : undefined), 'the miss over')
  const openFiles = () => readdirSync('/proc/self/fd').length
  const baseline = openFiles()
  for (let i = 0; i < 20; i++) {
    const res = await request(url)
    for await (const _chunk of res.body) break // one chunk, then gone
  }
  // Pipelined on one connection, never read.
  const { connect } = await import('node:net')
  const { port } = new URL(proxy.mediaUrl)
  const socket = connect(Number(port), '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(`GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(8))
  socket.pause()
  await waitFor(() => (proxy.app.inFlight.count === 1 ? true : undefined), 'the first pipelined hit in flight')
  socket.destroy()
  await waitFor(
    () => (proxy.app.inFlight.count === 0 && openFiles() <= baseline ? true : undefined),
    'every cached file closed',
  )
  assert.equal(mediaRequests(emulator).length, 1)
})

test('with a cache, refusals on media paths carry Cache-Status too', async (t) => {
  const emulator = await startEmulator(t)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const bad = await get(`${proxy.mediaUrl}/media/not-a-uuid`)
  assert.equal(bad.status, 400)
  assert.equal(bad.headers['cache-status'], 'vonage-media-proxy; fwd=uri-miss')
})

test('POST takes no body: whatever a webhook client sends with it (an empty form, JSON, chunked) is ignored', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1_000)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/v3/media/${MEDIA_ID}`
  const cases: Array<{ headers: Record<string, string>; body?: string }> = [
    { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '' },
    { headers: { 'content-type': 'application/json' }, body: '' },
    { headers: { 'content-type': 'application/octet-stream' }, body: 'ignored' },
    { headers: { 'content-type': 'application/json' }, body: '{"not": "used"' },
    { headers: {} },
  ]
  const statuses: number[] = []
  for (const { headers, body } of cases) {
    const res = await request(url, { method: 'POST', headers, body })
    statuses.push(res.statusCode)
    await res.body.arrayBuffer()
  }
  assert.deepEqual(statuses, [201, 200, 200, 200, 200])
  const chunked = await request(url, {
    method: 'POST',
    body: Readable.from([Buffer.from('x')]),
  })
  assert.equal(chunked.statusCode, 200)
  await chunked.body.arrayBuffer()
  const huge = await request(url, { method: 'POST', body: Buffer.alloc(1024 * 1024) })
  assert.equal(huge.statusCode, 413)
  assert.equal(JSON.parse(await huge.body.text()).type, 'urn:vonage-media-proxy:problem:payload-too-large')
})

test('HEAD on a stored file reads nothing and counts no body bytes', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 2 * 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir(t) })
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`
  await get(url)
  const head = await get(url, {}, 'HEAD')
  assert.equal(head.headers['cache-status'], 'vonage-media-proxy; hit')
  assert.equal(head.headers['content-length'], String(2 * 1024 * 1024))
  const lines = proxy.logs.filter((line) => line.msg === 'request completed')
  assert.equal(lines.at(-1)?.bytes, 0)
})

test('a file whose readers come and go is counted once among the unattended downloads', async (t) => {
  const emulator = await startEmulator(t)
  const ids = Array.from({ length: 20 }, (_, i) => `${String(i).padStart(8, '0')}-0000-4000-8000-000000000000`)
  for (const id of ids) emulator.media.addSynthetic(id, 256 * 1024)
  const dir = cacheDir(t)
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: dir })
  for (const id of ids) {
    emulator.faults.push({ dripDelayMs: 5, dripBytes: 32 * 1024 })
    // Two readers, each leaving after the headers: the download is left twice.
    for (let reader = 0; reader < 2; reader++) {
      const res = await request(`${proxy.mediaUrl}/media/${id}`)
      res.body.destroy()
    }
    await waitFor(() => (readdirSync(join(dir, 'data')).length > ids.indexOf(id) ? true : undefined), `${id} stored`)
  }
  assert.equal(readdirSync(join(dir, 'data')).length, 20, 'every file left by its readers was still stored')
})
