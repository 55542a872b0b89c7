// Proves the routes for every Vonage file a webhook hands out, end to end over TLS: /{host}/...
// reaches that host (SNI, Host and the certificate all name it) through UPSTREAM_CONNECT_TO,
// /v1/files serves recordings, a host off the list is refused before any connection, a listed
// host whose certificate does not name it is a 502 with nothing sent, and the access log and the
// metrics say which host served. The emulator's throwaway CA is trusted the way each kind of
// test can: in-process through the app's CA hook, in a real process through NODE_EXTRA_CA_CERTS.
import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import fc from 'fast-check'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import type { ThrowawayCa } from '../src/emulator/throwaway-ca.js'
import { accessLines, MEDIA_ID, proxyEnv, rawRequest, spawnProxy, startProxy, startTlsEmulator } from './helpers.js'

const RECORDING_ID = '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e'
const HOSTS = ['api-us.nexmo.com', 'api-eu.nexmo.com', 'api.nexmo.com', 'api-eu.vonage.com', 'api-us-4.vonage.com']

async function setup(t: TestContext, env: Record<string, string> = {}) {
  const { emulator, ca } = await startTlsEmulator(t, HOSTS, { narrowFor: ['api-us-4.vonage.com'] })
  emulator.media.addSynthetic(MEDIA_ID, 10_000, { contentType: 'image/jpeg' })
  emulator.files.addWav(RECORDING_ID, 1)
  const { port } = new URL(emulator.url)
  const proxy = await startProxy(
    t,
    'https://api-us.nexmo.com',
    { UPSTREAM_CONNECT_TO: `127.0.0.1:${port}`, ...env },
    { upstreamCa: ca.caPem },
  )
  return { emulator, ca, proxy }
}

function lastRequest(emulator: VonageEmulator) {
  const recorded = emulator.requests.at(-1)
  assert.ok(recorded, 'a request reached the emulator')
  return recorded
}

test('/{host}/v3/media/:id and /{host}/v1/files/:id reach that host over TLS, named in SNI and Host', async (t) => {
  const { emulator, proxy } = await setup(t)

  const media = await request(`${proxy.mediaUrl}/api-eu.nexmo.com/v3/media/${MEDIA_ID}`)
  assert.equal(media.statusCode, 200)
  assert.equal(media.headers['content-type'], 'image/jpeg')
  assert.equal((await media.body.arrayBuffer()).byteLength, 10_000)
  let upstream = lastRequest(emulator)
  assert.equal(upstream.servername, 'api-eu.nexmo.com')
  assert.equal(upstream.host, 'api-eu.nexmo.com')
  assert.equal(upstream.url, `/v3/media/${MEDIA_ID}`)
  assert.ok(upstream.jti, 'the token was verified')

  const recording = await request(`${proxy.mediaUrl}/API-EU.VONAGE.COM/v1/files/${RECORDING_ID}`, {
    headers: { range: 'bytes=0-43' },
  })
  assert.equal(recording.statusCode, 206)
  assert.equal(recording.headers['content-type'], 'audio/wav')
  const header = Buffer.from(await recording.body.arrayBuffer())
  assert.equal(header.subarray(0, 4).toString('latin1'), 'RIFF')
  upstream = lastRequest(emulator)
  assert.equal(upstream.servername, 'api-eu.vonage.com')
  assert.equal(upstream.url, `/v1/files/${RECORDING_ID}`)

  // The short routes go to UPSTREAM_BASE_URL's host, through the same connect-to.
  const short = await request(`${proxy.mediaUrl}/v1/files/${RECORDING_ID}`, { method: 'HEAD' })
  assert.equal(short.statusCode, 200)
  await short.body.dump()
  assert.equal(lastRequest(emulator).servername, 'api-us.nexmo.com')

  const lines = accessLines(proxy)
  assert.deepEqual(
    lines.map((line) => [line.upstreamHost, line.status, line.mediaId]),
    [
      ['api-eu.nexmo.com', 200, MEDIA_ID],
      ['api-eu.vonage.com', 206, RECORDING_ID],
      ['api-us.nexmo.com', 200, RECORDING_ID],
    ],
  )
  const metrics = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
  assert.match(metrics, /media_proxy_upstream_latency_seconds_count\{host="api-eu\.vonage\.com",status="206"\} 1/)
  assert.match(metrics, /media_proxy_requests_total\{method="GET",route="\/:host\/v1\/files\/:id",status="206"\} 1/)
})

test('a host off the list, or written any way but exactly, is 403 before any connection; a bad id under a listed host is 400', async (t) => {
  const { emulator, proxy } = await setup(t)
  for (const host of [
    'evil.example',
    'api-eu.nexmo.com:443',
    'api-eu.nexmo.com.',
    '%61pi-eu.nexmo.com',
    'u@api-eu.nexmo.com',
  ]) {
    const res = await rawRequest(proxy.mediaUrl, 'GET', `/${host}/v3/media/${MEDIA_ID}`)
    assert.equal(res.status, 403, host)
    assert.equal(res.headers['content-type'], 'application/problem+json')
    assert.match(res.body.toString(), /host-not-allowed/)
  }
  const bad = await rawRequest(proxy.mediaUrl, 'GET', '/api-eu.nexmo.com/v1/files/not-a-uuid')
  assert.equal(bad.status, 400)
  const post = await rawRequest(proxy.mediaUrl, 'POST', `/api-eu.nexmo.com/v3/media/${MEDIA_ID}`)
  assert.equal(post.status, 405)
  assert.equal(post.headers.allow, 'GET, HEAD')
  assert.equal(emulator.requests.length, 0, 'nothing was sent')
})

test('a listed host whose certificate does not name it is a 502, and nothing is sent', async (t) => {
  const { emulator, proxy } = await setup(t)
  const res = await request(`${proxy.mediaUrl}/api-us-4.vonage.com/v3/media/${MEDIA_ID}`)
  assert.equal(res.statusCode, 502)
  await res.body.dump()
  assert.equal(emulator.requests.length, 0)
  const failure = proxy.logs.find((line) => line.msg === 'Vonage request failed')
  assert.equal(failure?.cause, 'ERR_TLS_CERT_ALTNAME_INVALID')
})

test('UPSTREAM_HOSTS narrows the list: a default host left out is refused', async (t) => {
  const { emulator, proxy } = await setup(t, { UPSTREAM_HOSTS: 'api-eu.nexmo.com' })
  const refused = await request(`${proxy.mediaUrl}/api-us.nexmo.com/v3/media/${MEDIA_ID}`)
  assert.equal(refused.statusCode, 403)
  await refused.body.dump()
  const served = await request(`${proxy.mediaUrl}/api-eu.nexmo.com/v3/media/${MEDIA_ID}`)
  assert.equal(served.statusCode, 200)
  await served.body.dump()
  assert.equal(emulator.requests.length, 1)
})

test('a real process trusts the emulator through NODE_EXTRA_CA_CERTS, and refuses it without', async (t) => {
  const { emulator, ca } = await startTlsEmulator(t, HOSTS)
  emulator.files.addWav(RECORDING_ID, 1)
  const env = proxyEnv('https://api-us.nexmo.com', { UPSTREAM_CONNECT_TO: `127.0.0.1:${new URL(emulator.url).port}` })
  const trusting = await spawnProxy(t, { ...env, NODE_EXTRA_CA_CERTS: (ca as ThrowawayCa).caPath })
  const ok = await request(`${trusting.mediaUrl}/api.nexmo.com/v1/files/${RECORDING_ID}`)
  assert.equal(ok.statusCode, 200)
  assert.equal(ok.headers['content-type'], 'audio/wav')
  await ok.body.dump()
  const untrusting = await spawnProxy(t, env)
  const refused = await request(`${untrusting.mediaUrl}/api.nexmo.com/v1/files/${RECORDING_ID}`)
  assert.equal(refused.statusCode, 502)
  await refused.body.dump()
  assert.equal(emulator.requests.length, 1)
})

test('fuzz through the proxy: 2,000 odd paths, and every request that reaches any host is a listed host and a file path', async (t) => {
  const { emulator, proxy } = await setup(t)
  emulator.media.addSynthetic(RECORDING_ID, 16)
  const hosts = fc.oneof(
    fc.constantFrom(
      ...HOSTS,
      'evil.example',
      'api-eu.nexmo.com.',
      'api-eu.nexmo.com:443',
      '%61pi.nexmo.com',
      'API.NEXMO.COM',
    ),
    fc.domain(),
  )
  const ids = fc.oneof(fc.constant(MEDIA_ID), fc.uuid(), fc.constant(`${MEDIA_ID}/x`), fc.constant('..%2f..%2fetc'))
  const paths = fc.oneof(
    fc
      .tuple(hosts, fc.constantFrom('/v3/media/', '/v1/files/', '/v3/media//', '/v2/media/'), ids)
      .map(([host, kind, id]) => `/${host}${kind}${id}`),
    fc.tuple(fc.constantFrom('/media/', '/v3/media/', '/v1/files/', '//'), ids).map(([prefix, id]) => prefix + id),
  )
  const samples = fc.sample(paths, { numRuns: 2_000, seed: 2026 })
  for (const path of samples) {
    const res = await rawRequest(proxy.mediaUrl, 'GET', path.replace(/[^\x21-\x7e]/g, '_'))
    assert.ok([200, 400, 403, 404, 502].includes(res.status), `${path}: ${res.status}`)
  }
  const allowed = new Set(HOSTS)
  for (const upstream of emulator.requests) {
    assert.ok(allowed.has(upstream.servername ?? ''), `reached ${upstream.servername}`)
    assert.equal(upstream.host, upstream.servername)
    assert.match(upstream.url, /^\/(v3\/media|v1\/files)\/[0-9a-f-]{36}$/i)
  }
  assert.ok(emulator.requests.length > 100, `only ${emulator.requests.length} requests reached the emulator`)
})
