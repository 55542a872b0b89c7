// The core path: a media id fetched through the proxy arrives byte-identical, with the
// allowlisted headers, for both route prefixes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { MEDIA_ID, startEmulator, startProxy } from './helpers.js'

test('GET /media/:id and /v3/media/:id stream the upstream body and headers', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024, { contentType: 'image/jpeg', fileName: 'photo.jpg' })
  const proxy = await startProxy(t, emulator.url)

  for (const prefix of ['/media/', '/v3/media/']) {
    const res = await request(`${proxy.mediaUrl}${prefix}${MEDIA_ID}`)
    const body = Buffer.from(await res.body.arrayBuffer())
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-type'], 'image/jpeg')
    assert.equal(res.headers['content-length'], '1024')
    assert.equal(res.headers['content-disposition'], 'inline; filename="photo.jpg"')
    assert.equal(body.length, 1024)
    assert.equal(body[300], 300 % 251)
  }
  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`GET /v3/media/${MEDIA_ID}`, `GET /v3/media/${MEDIA_ID}`],
  )
})
