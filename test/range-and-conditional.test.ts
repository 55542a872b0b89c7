// Range, If-Range, HEAD and conditional GETs pass through: 206/416/304 come back, the headers go up.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import type { MediaItem } from '../src/emulator/media-store.js'
import { MEDIA_ID, type RunningProxy, startEmulator, startProxy, waitFor } from './helpers.js'

const SIZE = 10_000

/** The bytes a synthetic item holds from start to end inclusive. */
function expectedBytes(start: number, end: number): Buffer {
  const bytes = Buffer.alloc(end - start + 1)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (start + i) % 251
  return bytes
}

interface Fixture {
  emulator: VonageEmulator
  proxy: RunningProxy
  item: MediaItem
  url: string
}

async function fixture(t: Parameters<typeof startEmulator>[0]): Promise<Fixture> {
  const emulator = await startEmulator(t)
  const item = emulator.media.addSynthetic(MEDIA_ID, SIZE, {
    contentType: 'video/mp4',
    lastModified: new Date('2026-01-02T03:04:05Z'),
  })
  const proxy = await startProxy(t, emulator.url)
  return { emulator, proxy, item, url: `${proxy.mediaUrl}/media/${MEDIA_ID}` }
}

async function get(url: string, headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

/** The headers of the n-th request the emulator received, once it has finished answering it. */
async function received(emulator: VonageEmulator, index: number) {
  const record = await waitFor(
    () => (emulator.requests[index]?.closed ? emulator.requests[index] : undefined),
    `upstream request ${index} answered`,
  )
  return record
}

/**
 * The whole response to one request over a bare socket that the proxy closes afterwards: the
 * only way to see that a HEAD or 304 answer really carries no body bytes.
 */
function rawExchange(baseUrl: string, head: string): Promise<{ head: string; rest: Buffer }> {
  const { hostname, port } = new URL(baseUrl)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    const chunks: Buffer[] = []
    socket.setTimeout(5_000, () => socket.destroy(new Error('no complete answer')))
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.once('error', reject)
    socket.once('end', () => {
      const data = Buffer.concat(chunks)
      const split = data.indexOf('\r\n\r\n')
      if (split === -1) return reject(new Error('no response head'))
      resolve({ head: data.subarray(0, split).toString('latin1'), rest: data.subarray(split + 4) })
    })
    socket.write(`${head}Host: ${hostname}:${port}\r\nConnection: close\r\n\r\n`)
  })
}

test('Range gets 206 with Content-Range and exactly those bytes', async (t) => {
  const { emulator, url } = await fixture(t)

  const res = await get(url, { range: 'bytes=1000-1999' })
  assert.equal(res.status, 206)
  assert.equal(res.headers['content-range'], `bytes 1000-1999/${SIZE}`)
  assert.equal(res.headers['content-length'], '1000')
  assert.equal(res.headers['accept-ranges'], 'bytes')
  assert.equal(res.headers['content-type'], 'video/mp4')
  assert.deepEqual(res.body, expectedBytes(1000, 1999))

  const open = await get(url, { range: 'bytes=9990-' })
  assert.equal(open.status, 206)
  assert.equal(open.headers['content-range'], `bytes 9990-9999/${SIZE}`)
  assert.deepEqual(open.body, expectedBytes(9990, 9999))

  assert.equal((await received(emulator, 0)).headers.range, 'bytes=1000-1999')
  assert.equal((await received(emulator, 1)).headers.range, 'bytes=9990-')
  assert.equal(emulator.requests[0]?.status, 206)
})

test('a suffix Range gets the last bytes', async (t) => {
  const { emulator, url } = await fixture(t)

  const res = await get(url, { range: 'bytes=-300' })
  assert.equal(res.status, 206)
  assert.equal(res.headers['content-range'], `bytes ${SIZE - 300}-${SIZE - 1}/${SIZE}`)
  assert.equal(res.headers['content-length'], '300')
  assert.deepEqual(res.body, expectedBytes(SIZE - 300, SIZE - 1))
  assert.equal((await received(emulator, 0)).headers.range, 'bytes=-300')
})

test('an unsatisfiable Range gets 416 with Content-Range: bytes */size', async (t) => {
  const { emulator, url } = await fixture(t)

  const res = await get(url, { range: `bytes=${SIZE}-` })
  assert.equal(res.status, 416)
  assert.equal(res.headers['content-range'], `bytes */${SIZE}`)
  assert.equal(res.body.length, 0)
  assert.ok(res.headers['x-request-id'])
  const upstream = await received(emulator, 0)
  assert.equal(upstream.headers.range, `bytes=${SIZE}-`)
  assert.equal(upstream.status, 416)
})

test('If-Range with the current ETag honours the Range; with another ETag the whole body comes back', async (t) => {
  const { emulator, item, url } = await fixture(t)

  const matching = await get(url, { range: 'bytes=0-99', 'if-range': item.etag })
  assert.equal(matching.status, 206)
  assert.equal(matching.headers['content-range'], `bytes 0-99/${SIZE}`)
  assert.deepEqual(matching.body, expectedBytes(0, 99))

  const stale = await get(url, { range: 'bytes=0-99', 'if-range': '"an-older-version"' })
  assert.equal(stale.status, 200)
  assert.equal(stale.headers['content-range'], undefined)
  assert.equal(stale.headers['content-length'], String(SIZE))
  assert.equal(stale.headers.etag, item.etag)
  assert.deepEqual(stale.body, expectedBytes(0, SIZE - 1))

  const first = await received(emulator, 0)
  assert.equal(first.headers.range, 'bytes=0-99')
  assert.equal(first.headers['if-range'], item.etag)
  const second = await received(emulator, 1)
  assert.equal(second.headers.range, 'bytes=0-99')
  assert.equal(second.headers['if-range'], '"an-older-version"')
})

test('HEAD gets the headers, Content-Length included, and no body', async (t) => {
  const { emulator, proxy, item } = await fixture(t)

  const res = await get(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, {}, 'HEAD')
  assert.equal(res.status, 200)
  assert.equal(res.headers['content-length'], String(SIZE))
  assert.equal(res.headers['content-type'], 'video/mp4')
  assert.equal(res.headers.etag, item.etag)
  assert.equal(res.headers['last-modified'], item.lastModified.toUTCString())
  assert.equal(res.headers['accept-ranges'], 'bytes')

  const raw = await rawExchange(proxy.mediaUrl, `HEAD /media/${MEDIA_ID} HTTP/1.1\r\n`)
  assert.match(raw.head, /^HTTP\/1\.1 200 /)
  assert.match(raw.head, new RegExp(`\\r\\ncontent-length: ${SIZE}\\r\\n`, 'i'))
  assert.equal(raw.rest.length, 0, 'not one body byte after the head')

  assert.deepEqual(
    emulator.requests.map((r) => `${r.method} ${r.url}`),
    [`HEAD /v3/media/${MEDIA_ID}`, `HEAD /v3/media/${MEDIA_ID}`],
  )
})

test('If-None-Match with the ETag gets 304 with no body', async (t) => {
  const { emulator, proxy, item, url } = await fixture(t)

  const res = await get(url, { 'if-none-match': item.etag })
  assert.equal(res.status, 304)
  assert.equal(res.body.length, 0)
  assert.equal(res.headers.etag, item.etag)
  assert.ok(res.headers['x-request-id'])

  const raw = await rawExchange(proxy.mediaUrl, `GET /media/${MEDIA_ID} HTTP/1.1\r\nIf-None-Match: ${item.etag}\r\n`)
  assert.match(raw.head, /^HTTP\/1\.1 304 /)
  assert.equal(raw.rest.length, 0, 'not one body byte after the head')

  const other = await get(url, { 'if-none-match': '"something-else"' })
  assert.equal(other.status, 200)
  assert.deepEqual(other.body, expectedBytes(0, SIZE - 1))

  assert.equal((await received(emulator, 0)).headers['if-none-match'], item.etag)
  assert.equal((await received(emulator, 1)).headers['if-none-match'], item.etag)
  assert.equal((await received(emulator, 2)).headers['if-none-match'], '"something-else"')
  assert.deepEqual(
    emulator.requests.map((r) => r.status),
    [304, 304, 200],
  )
})

test('If-Modified-Since at or after Last-Modified gets 304; before it, the body', async (t) => {
  const { emulator, item, url } = await fixture(t)
  const lastModified = item.lastModified.toUTCString()
  const later = new Date(item.lastModified.getTime() + 60_000).toUTCString()
  const earlier = new Date(item.lastModified.getTime() - 60_000).toUTCString()

  const same = await get(url, { 'if-modified-since': lastModified })
  assert.equal(same.status, 304)
  assert.equal(same.body.length, 0)
  assert.equal(same.headers['last-modified'], lastModified)

  const after = await get(url, { 'if-modified-since': later })
  assert.equal(after.status, 304)
  assert.equal(after.body.length, 0)

  const before = await get(url, { 'if-modified-since': earlier })
  assert.equal(before.status, 200)
  assert.equal(before.headers['last-modified'], lastModified)
  assert.deepEqual(before.body, expectedBytes(0, SIZE - 1))

  assert.equal((await received(emulator, 0)).headers['if-modified-since'], lastModified)
  assert.equal((await received(emulator, 1)).headers['if-modified-since'], later)
  assert.equal((await received(emulator, 2)).headers['if-modified-since'], earlier)
})
