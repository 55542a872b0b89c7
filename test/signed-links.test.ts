// Signed links (LINK_SIGNING_KEYS): a link authorises a download instead of a client key; an
// expired, tampered, foreign-path, too-far or malformed one is 403 with nothing sent upstream;
// POST /links signs them; the link's query is never forwarded nor logged whole. And safe
// delivery: nosniff, a CSP that runs nothing, attachment for anything but images, audio and
// video, CORS for listed origins.
import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { signLink } from '../src/links/signature.js'
import { APPLICATION_ID, MEDIA_ID, startEmulator, startProxy } from './helpers.js'

const KEY_1 = 'k1-0123456789abcdef0123456789abcdef'
const KEY_2 = 'k2-fedcba9876543210fedcba9876543210'
const CLIENT_KEY = 'client-key-0123456789abcdef'
const OTHER_ID = '2c567610-085d-4569-bbfb-56fd59b5e087'
const HTML_ID = '3d678721-196e-467a-8c0c-67fe6ac6f198'
const SVG_ID = '4e789832-2a7f-478b-9d1d-78af7bd7a2a9'
const ORIGIN = 'https://desk.example.com'

async function setup(t: TestContext, env: Record<string, string> = {}) {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 5_000, { contentType: 'image/jpeg', fileName: 'photo.jpg' })
  emulator.media.addSynthetic(OTHER_ID, 5_000, { contentType: 'audio/ogg' })
  emulator.media.addSynthetic(HTML_ID, 100, { contentType: 'text/html', fileName: 'invoice.html' })
  emulator.media.addSynthetic(SVG_ID, 100, { contentType: 'image/svg+xml', fileName: 'logo.svg' })
  const proxy = await startProxy(t, emulator.url, {
    LINK_SIGNING_KEYS: `${KEY_1},${KEY_2}`,
    LINK_MAX_TTL_SECONDS: '3600',
    INBOUND_API_KEYS: CLIENT_KEY,
    CORS_ALLOWED_ORIGINS: ORIGIN,
    ...env,
  })
  return { emulator, proxy }
}

async function fetchRaw(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  const res = await request(url, { method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

const now = () => Math.floor(Date.now() / 1000)

function link(base: string, path: string, expires: number, key = KEY_1, application?: string): string {
  const signature = signLink(key, path, expires, application)
  const app = application === undefined ? '' : `application=${application}&`
  return `${base}${path}?${app}expires=${expires}&signature=${signature}`
}

test('a valid link needs no client key; its query is never forwarded, and only its expiry is logged', async (t) => {
  const { emulator, proxy } = await setup(t)
  const path = `/v3/media/${MEDIA_ID}`
  const expires = now() + 300
  const response = await fetchRaw(link(proxy.mediaUrl, path, expires))
  assert.equal(response.status, 200)
  assert.equal(response.body.length, 5_000)
  const upstream = emulator.requests.at(-1)
  assert.equal(upstream?.url, path, 'no query string upstream')
  // Signed by the second key (rotation), and with an application.
  assert.equal((await fetchRaw(link(proxy.mediaUrl, path, expires, KEY_2))).status, 200)
  assert.equal((await fetchRaw(link(proxy.mediaUrl, path, expires, KEY_1, APPLICATION_ID))).status, 200)
  // Without a link, the client key is still required.
  assert.equal((await fetchRaw(`${proxy.mediaUrl}${path}`)).status, 401)

  const line = proxy.logs.find((entry) => entry.msg === 'request completed')
  assert.equal(line?.path, path)
  assert.equal(line?.linkExpires, expires)
  assert.doesNotMatch(proxy.rawLogs(), /signature/)
  assert.doesNotMatch(proxy.rawLogs(), new RegExp(signLink(KEY_1, path, expires)))
})

test('expired, tampered, foreign-path, too-far, malformed and POSTed links get 403, and nothing is sent upstream', async (t) => {
  const { emulator, proxy } = await setup(t)
  const path = `/v3/media/${MEDIA_ID}`
  const base = proxy.mediaUrl
  const valid = now() + 300
  const signature = signLink(KEY_1, path, valid)
  const refused = [
    link(base, path, now() - 1),
    `${base}${path}?expires=${valid}&signature=${signature.slice(0, -2)}AA`,
    `${base}${path}?expires=${valid + 1}&signature=${signature}`,
    `${base}/v3/media/${OTHER_ID}?expires=${valid}&signature=${signature}`,
    `${base}/media/${MEDIA_ID}?expires=${valid}&signature=${signature}`,
    link(base, path, now() + 7200),
    link(base, path, valid, 'some-other-key-that-is-long-enough-123'),
    `${base}${path}?expires=${valid}`,
    `${base}${path}?expires=${valid}&signature=${signature}&signature=${signature}`,
    `${base}${path}?expires=soon&signature=${signature}`,
    `${base}${path}?application=${APPLICATION_ID}&expires=${valid}&signature=${signature}`,
  ]
  for (const url of refused) {
    const response = await fetchRaw(url)
    assert.equal(response.status, 403, url)
    assert.equal(JSON.parse(response.body.toString()).type, 'urn:vonage-media-proxy:problem:invalid-link')
  }
  assert.equal(emulator.requests.length, 0)
})

test('POST /links signs a link for a path or a Vonage URL, with the client key and application checks', async (t) => {
  const { emulator, proxy } = await setup(t, { PUBLIC_BASE_URL: 'https://media.example.com/proxy/' })
  const auth = { authorization: `Bearer ${CLIENT_KEY}`, 'content-type': 'application/json' }
  const post = (body: unknown, headers: Record<string, string> = auth) =>
    fetchRaw(`${proxy.mediaUrl}/links`, { method: 'POST', headers, body: JSON.stringify(body) })

  const before = now()
  const created = await post({ path: `/v3/media/${MEDIA_ID}`, ttlSeconds: 120 })
  assert.equal(created.status, 201)
  const { url, expiresAt } = JSON.parse(created.body.toString()) as { url: string; expiresAt: string }
  const parsed = new URL(url)
  assert.equal(`${parsed.origin}${parsed.pathname}`, `https://media.example.com/proxy/v3/media/${MEDIA_ID}`)
  const expires = Number(parsed.searchParams.get('expires'))
  assert.ok(expires >= before + 120 && expires <= now() + 120)
  assert.equal(expiresAt, new Date(expires * 1000).toISOString())
  assert.equal(parsed.searchParams.get('signature'), signLink(KEY_1, `/v3/media/${MEDIA_ID}`, expires))
  // The link works against the proxy itself (the public base is a reverse proxy's).
  const served = await fetchRaw(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}${parsed.search}`)
  assert.equal(served.status, 200)

  const fromUrl = await post({ url: `https://api-eu.nexmo.com/v3/media/${MEDIA_ID}`, application: APPLICATION_ID })
  assert.equal(fromUrl.status, 201)
  const euLink = new URL(JSON.parse(fromUrl.body.toString()).url)
  assert.equal(euLink.pathname, `/proxy/api-eu.nexmo.com/v3/media/${MEDIA_ID}`)
  assert.equal(euLink.searchParams.get('application'), APPLICATION_ID)
  assert.equal(
    euLink.searchParams.get('signature'),
    signLink(
      KEY_1,
      `/api-eu.nexmo.com/v3/media/${MEDIA_ID}`,
      Number(euLink.searchParams.get('expires')),
      APPLICATION_ID,
    ),
  )

  assert.equal((await post({ url: `https://evil.example.com/v3/media/${MEDIA_ID}` })).status, 403)
  assert.equal((await post({ path: '/v3/media/not-a-uuid' })).status, 400)
  assert.equal((await post({ path: '/admin' })).status, 400)
  assert.equal((await post({ path: `/v3/media/${MEDIA_ID}`, ttlSeconds: 3601 })).status, 400)
  assert.equal((await post({ path: `/v3/media/${MEDIA_ID}`, ttlSeconds: 1.5 })).status, 400)
  assert.equal((await post([1, 2])).status, 400)
  assert.equal((await post({})).status, 400)
  assert.equal(
    (await post({ path: `/v3/media/${MEDIA_ID}`, url: `https://api.nexmo.com/v3/media/${MEDIA_ID}` })).status,
    400,
  )
  assert.equal((await post({ path: `/v3/media/${MEDIA_ID}` }, { 'content-type': 'application/json' })).status, 401)
  assert.equal((await post({ path: `/v3/media/${MEDIA_ID}`, application: OTHER_ID })).status, 400)
  const malformed = await fetchRaw(`${proxy.mediaUrl}/links`, { method: 'POST', headers: auth, body: '{"path":' })
  assert.equal(malformed.status, 400)
  assert.equal(emulator.requests.length, 1, 'only the download reached Vonage')
})

test('without LINK_SIGNING_KEYS there is no /links, and link parameters authorise nothing', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100)
  const proxy = await startProxy(t, emulator.url, { INBOUND_API_KEYS: CLIENT_KEY })
  assert.equal((await fetchRaw(`${proxy.mediaUrl}/links`, { method: 'POST' })).status, 404)
  const path = `/v3/media/${MEDIA_ID}`
  assert.equal((await fetchRaw(link(proxy.mediaUrl, path, now() + 60))).status, 401)
})

test('safe delivery: nosniff and a CSP on every media response; only images, audio and video inline', async (t) => {
  const { proxy } = await setup(t)
  const auth = { authorization: `Bearer ${CLIENT_KEY}` }
  const image = await fetchRaw(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, { headers: auth })
  assert.equal(image.headers['x-content-type-options'], 'nosniff')
  assert.equal(image.headers['content-security-policy'], "default-src 'none'; sandbox")
  assert.equal(image.headers['content-disposition'], 'inline; filename="photo.jpg"')
  assert.equal(image.headers['cross-origin-resource-policy'], 'same-site')
  const audio = await fetchRaw(`${proxy.mediaUrl}/v3/media/${OTHER_ID}`, { headers: auth })
  assert.equal(audio.headers['content-disposition'], undefined, 'audio plays inline')
  const html = await fetchRaw(`${proxy.mediaUrl}/v3/media/${HTML_ID}`, { headers: auth })
  assert.equal(html.headers['content-disposition'], 'attachment; filename="invoice.html"')
  assert.equal(html.headers['content-security-policy'], "default-src 'none'; sandbox")
  const svg = await fetchRaw(`${proxy.mediaUrl}/v3/media/${SVG_ID}`, { headers: auth })
  assert.equal(svg.headers['content-disposition'], 'attachment; filename="logo.svg"')
  // Problems too.
  const refused = await fetchRaw(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`)
  assert.equal(refused.status, 401)
  assert.equal(refused.headers['x-content-type-options'], 'nosniff')
  assert.equal(refused.headers['content-security-policy'], "default-src 'none'; sandbox")
})

test('CORS: a listed origin gets Access-Control-Allow-Origin and Vary; a preflight is 204 and allows Range', async (t) => {
  const { proxy } = await setup(t)
  const path = `/v3/media/${MEDIA_ID}`
  const url = link(proxy.mediaUrl, path, now() + 60)
  const listed = await fetchRaw(url, { headers: { origin: ORIGIN, range: 'bytes=0-9' } })
  assert.equal(listed.status, 206)
  assert.equal(listed.headers['access-control-allow-origin'], ORIGIN)
  assert.match(String(listed.headers.vary), /Origin/)
  assert.match(String(listed.headers['access-control-expose-headers']), /Content-Range/)
  assert.match(String(listed.headers['access-control-expose-headers']), /Content-Length/)
  const other = await fetchRaw(url, { headers: { origin: 'https://evil.example.com' } })
  assert.equal(other.status, 200)
  assert.equal(other.headers['access-control-allow-origin'], undefined)
  assert.match(String(other.headers.vary), /Origin/)

  const preflight = await fetchRaw(`${proxy.mediaUrl}${path}`, {
    method: 'OPTIONS',
    headers: { origin: ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'range' },
  })
  assert.equal(preflight.status, 204)
  assert.equal(preflight.headers['access-control-allow-origin'], ORIGIN)
  assert.match(String(preflight.headers['access-control-allow-methods']), /GET/)
  assert.match(String(preflight.headers['access-control-allow-headers']), /Range/)
})

test('without CORS_ALLOWED_ORIGINS, OPTIONS on a media path stays 405 and no CORS header is sent', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100)
  const proxy = await startProxy(t, emulator.url)
  const options = await fetchRaw(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, {
    method: 'OPTIONS',
    headers: { origin: ORIGIN, 'access-control-request-method': 'GET' },
  })
  assert.equal(options.status, 405)
  const get = await fetchRaw(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, { headers: { origin: ORIGIN } })
  assert.equal(get.headers['access-control-allow-origin'], undefined)
})

test('a refused preflight grants nothing; ttlSeconds null is 400; a link pasted into the path is never logged whole', async (t) => {
  const { proxy } = await setup(t)
  const path = `/v3/media/${MEDIA_ID}`
  for (const [method, headers] of [
    ['GET', 'authorization'],
    ['POST', ''],
    ['GET', 'x-foo'],
  ] as const) {
    const refused = await fetchRaw(`${proxy.mediaUrl}${path}`, {
      method: 'OPTIONS',
      headers: {
        origin: ORIGIN,
        'access-control-request-method': method,
        ...(headers ? { 'access-control-request-headers': headers } : {}),
      },
    })
    assert.equal(refused.status, 204)
    assert.equal(refused.headers['access-control-allow-origin'], undefined, `${method} ${headers}`)
    assert.equal(refused.headers['access-control-allow-methods'], undefined)
  }
  const nullTtl = await fetchRaw(`${proxy.mediaUrl}/links`, {
    method: 'POST',
    headers: { authorization: `Bearer ${CLIENT_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ path, ttlSeconds: null }),
  })
  assert.equal(nullTtl.status, 400)
  const signature = signLink(KEY_1, path, now() + 60)
  const pasted = await fetchRaw(`${proxy.mediaUrl}${path}%3Fexpires=${now() + 60}%26signature=${signature}`)
  assert.equal(pasted.status, 400)
  assert.ok(!proxy.rawLogs().includes(signature), 'the signature is not in the log')
  const absolute = await fetchRaw(link(proxy.mediaUrl, path, now() + 60))
  assert.equal(absolute.status, 200)
})
