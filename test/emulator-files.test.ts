// Voice recordings at /v1/files/:id: served like media (token, ranges, validators, faults) from
// their own store, and the synthetic WAV the demo plays is a valid PCM file.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { request } from 'undici'
import { TokenSigner } from '../src/credentials/token-cache.js'
import { sampleWav } from '../src/emulator/media-store.js'
import { APPLICATION_ID, keys, MEDIA_ID, startEmulator } from './helpers.js'

const RECORDING_ID = 'aaaaaaaa-1111-4222-8333-444444444444'
const signer = new TokenSigner(keys.privateKey, APPLICATION_ID, 900)

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, {
    method,
    headers: { authorization: `Bearer ${(await signer.sign()).value}`, ...headers },
  })
  return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) }
}

test('sampleWav is a RIFF/WAVE file of 16-bit mono PCM at 8 kHz, the same every time', () => {
  const wav = sampleWav(2)
  assert.equal(wav.length, 44 + 2 * 8000 * 2)
  assert.equal(wav.toString('latin1', 0, 4), 'RIFF')
  assert.equal(wav.readUInt32LE(4), wav.length - 8)
  assert.equal(wav.toString('latin1', 8, 16), 'WAVEfmt ')
  assert.deepEqual(
    [wav.readUInt16LE(20), wav.readUInt16LE(22), wav.readUInt32LE(24), wav.readUInt16LE(34)],
    [1, 1, 8000, 16],
  )
  assert.equal(wav.toString('latin1', 36, 40), 'data')
  assert.equal(wav.readUInt32LE(40), wav.length - 44)
  assert.ok(
    wav.subarray(44).some((byte) => byte !== 0),
    'there is a tone, not silence',
  )
  assert.deepEqual(sampleWav(2), wav)
  assert.throws(() => sampleWav(0), /positive/)
})

test('a recording is served at /v1/files/:id with the token, ranges, validators and HEAD', async (t) => {
  const emulator = await startEmulator(t)
  const item = emulator.files.addWav(RECORDING_ID, 1)
  const wav = sampleWav(1)
  const base = `${emulator.url}/v1/files/${RECORDING_ID}`

  const whole = await get(base)
  assert.equal(whole.status, 200)
  assert.equal(whole.headers['content-type'], 'audio/wav')
  assert.equal(whole.headers['content-length'], String(wav.length))
  assert.equal(whole.headers['content-disposition'], `inline; filename="${RECORDING_ID}.wav"`)
  assert.equal(whole.headers.etag, item.etag)
  assert.deepEqual(whole.body, wav)
  assert.ok(emulator.requests[0]?.jti)

  const part = await get(base, { range: 'bytes=40-99' })
  assert.equal(part.status, 206)
  assert.equal(part.headers['content-range'], `bytes 40-99/${wav.length}`)
  assert.deepEqual(part.body, wav.subarray(40, 100))

  assert.equal((await get(base, { 'if-none-match': item.etag })).status, 304)
  assert.equal((await get(base, { range: `bytes=${wav.length}-` })).status, 416)
  const head = await get(base, {}, 'HEAD')
  assert.equal(head.status, 200)
  assert.equal(head.headers['content-length'], String(wav.length))
  assert.equal(head.body.length, 0)

  const unsigned = await request(base)
  await unsigned.body.dump()
  assert.equal(unsigned.statusCode, 401)
  const post = await request(base, { method: 'POST' })
  await post.body.dump()
  assert.equal(post.statusCode, 405)
})

test('media ids and recording ids are separate: each is 404 under the other path', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100)
  emulator.files.addWav(RECORDING_ID, 1)

  assert.equal((await get(`${emulator.url}/v3/media/${MEDIA_ID}`)).status, 200)
  assert.equal((await get(`${emulator.url}/v1/files/${RECORDING_ID}`)).status, 200)
  const media = await get(`${emulator.url}/v1/files/${MEDIA_ID}`)
  assert.equal(media.status, 404)
  assert.match(media.body.toString(), /recording does not exist/)
  const recording = await get(`${emulator.url}/v3/media/${RECORDING_ID}`)
  assert.equal(recording.status, 404)
  assert.match(recording.body.toString(), /media item does not exist/)
  assert.equal((await get(`${emulator.url}/v1/files/not-a-uuid`)).status, 404)
})

test('faults apply to recordings too', async (t) => {
  const emulator = await startEmulator(t)
  emulator.files.addWav(RECORDING_ID, 1)
  emulator.faults.push({ status: 503, retryAfter: '2' })
  const refused = await get(`${emulator.url}/v1/files/${RECORDING_ID}`)
  assert.equal(refused.status, 503)
  assert.equal(refused.headers['retry-after'], '2')

  emulator.faults.push({ chunked: true })
  const chunked = await get(`${emulator.url}/v1/files/${RECORDING_ID}`)
  assert.equal(chunked.status, 200)
  assert.equal(chunked.headers['content-length'], undefined)
  assert.deepEqual(chunked.body, sampleWav(1))
})
