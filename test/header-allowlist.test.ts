// Headers are allowlisted both ways, and X-Request-Id is validated, sent upstream and echoed on every response.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { OutgoingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { test } from 'node:test'
import { request } from 'undici'
import type { RecordedRequest, VonageEmulator } from '../src/emulator/emulator.js'
import {
  MEDIA_ID,
  rawRequest,
  startEmulator,
  startPassThrough,
  startProxy,
  startRawUpstream,
  waitFor,
} from './helpers.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const UNKNOWN_ID = '00000000-0000-4000-8000-00000000dead'

/** What the proxy may send upstream: the contract's allowlist, its own token, and undici's own connection headers. */
const UPSTREAM_REQUEST_HEADERS = [
  'accept',
  'authorization',
  'connection',
  'host',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'range',
  'x-request-id',
]

/** What a client may see: the contract's allowlist, X-Request-Id, and Node's own framing headers. */
const CLIENT_RESPONSE_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'content-disposition',
  'cache-control',
  'retry-after',
  'x-request-id',
  'date',
  'connection',
  'keep-alive',
  'transfer-encoding',
  // The proxy's own safe-delivery headers (signed links issue): never Vonage's.
  'x-content-type-options',
  'content-security-policy',
  'cross-origin-resource-policy',
])

/** Headers an upstream might add that must never reach a client. */
const UPSTREAM_EXTRA_HEADERS: OutgoingHttpHeaders = {
  'x-vonage-trace': 'internal-trace-id',
  // Looser than the proxy's own: must never replace it.
  'content-security-policy': 'default-src *',
  'x-request-id': 'chosen-by-upstream',
  'x-powered-by': 'upstream-framework',
  'www-authenticate': 'Bearer realm="upstream"',
  'proxy-authenticate': 'Basic realm="upstream"',
  'strict-transport-security': 'max-age=31536000',
  'access-control-allow-origin': '*',
  'alt-svc': 'h3=":443"',
  vary: 'Cookie',
  'keep-alive': 'timeout=999',
  connection: 'keep-alive, x-upstream-hop',
  'x-upstream-hop': 'hop-by-hop-value',
}

async function answered(emulator: VonageEmulator, index: number): Promise<RecordedRequest> {
  return waitFor(
    () => (emulator.requests[index]?.closed ? emulator.requests[index] : undefined),
    `upstream request ${index} answered`,
  )
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function expectedBytes(start: number, end: number): Buffer {
  const bytes = Buffer.alloc(end - start + 1)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (start + i) % 251
  return bytes
}

test('only the allowlisted request headers, a valid token and the bare path reach upstream', async (t) => {
  const emulator = await startEmulator(t)
  const item = emulator.media.addSynthetic(MEDIA_ID, 4096)
  const proxy = await startProxy(t, emulator.url)
  const clientToken = 'Bearer client-secret-token'
  const oldDate = new Date(item.lastModified.getTime() - 86_400_000).toUTCString()

  const res = await rawRequest(proxy.mediaUrl, 'GET', `/media/${MEDIA_ID}?api_key=client-secret&token=abc&x=%2F..`, {
    headerLines: [
      'Host: client-chosen.example',
      `Authorization: ${clientToken}`,
      'Cookie: session=client-cookie',
      'Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==',
      'Connection: close, X-Hop-Header',
      'X-Hop-Header: listed-in-connection',
      'Keep-Alive: timeout=1',
      'TE: trailers',
      'X-Forwarded-For: 10.1.2.3',
      'X-Forwarded-Host: client-chosen.example',
      'X-Forwarded-Proto: https',
      'Forwarded: for=10.1.2.3',
      'X-Real-IP: 10.1.2.3',
      'Via: 1.1 client-proxy',
      'User-Agent: client-agent/1.0',
      'Accept-Encoding: gzip, br',
      'Accept-Language: en',
      'Referer: https://client.example/page',
      'Origin: https://client.example',
      'X-Custom: anything',
      'X-Api-Key: client-secret',
      'Range: bytes=0-99',
      `If-Range: ${item.etag}`,
      'If-None-Match: "not-the-current-etag"',
      `If-Modified-Since: ${oldDate}`,
      'Accept: application/octet-stream',
      'X-Request-Id: client-req-42',
    ],
  })
  assert.equal(res.status, 206)
  assert.deepEqual(res.body, expectedBytes(0, 99))

  const upstream = await answered(emulator, 0)
  assert.equal(emulator.requests.length, 1)
  assert.equal(upstream.url, `/v3/media/${MEDIA_ID}`, 'no query string, no client path')
  assert.deepEqual(Object.keys(upstream.headers).sort(), UPSTREAM_REQUEST_HEADERS)
  assert.equal(upstream.headers.host, new URL(emulator.url).host)
  assert.notEqual(upstream.headers.authorization, clientToken)
  assert.match(upstream.headers.authorization ?? '', /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
  assert.ok(upstream.jti, 'the emulator accepted the proxy-minted token')
  assert.equal(upstream.headers.range, 'bytes=0-99')
  assert.equal(upstream.headers['if-range'], item.etag)
  assert.equal(upstream.headers['if-none-match'], '"not-the-current-etag"')
  assert.equal(upstream.headers['if-modified-since'], oldDate)
  assert.equal(upstream.headers.accept, 'application/octet-stream')
  assert.equal(upstream.headers['x-request-id'], 'client-req-42')
  assert.notEqual(upstream.headers.connection?.toLowerCase(), 'close, x-hop-header')
  const sent = JSON.stringify(upstream.headers)
  for (const secret of ['client-secret', 'client-cookie', '10.1.2.3', 'client-chosen', 'client-agent', 'anything']) {
    assert.ok(!sent.includes(secret), `${secret} did not reach upstream`)
  }
})

test('only the allowlisted response headers reach the client', async (t) => {
  const emulator = await startEmulator(t)
  const item = emulator.media.addSynthetic(MEDIA_ID, 4096, { contentType: 'image/png', fileName: 'pic.png' })
  const noisy = (await startPassThrough(t, emulator, { extraHeaders: UPSTREAM_EXTRA_HEADERS })).url
  const proxy = await startProxy(t, noisy)
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`

  // The noisy upstream really sends what the proxy must drop.
  const direct = await request(`${noisy}/v3/media/${MEDIA_ID}`, { headers: { authorization: 'Bearer x' } })
  await direct.body.dump()
  assert.equal(direct.statusCode, 401)
  for (const name of ['server', 'set-cookie', 'www-authenticate', 'x-vonage-trace', 'x-upstream-hop']) {
    assert.ok(direct.headers[name], `the upstream sends ${name}`)
  }

  const full = await rawRequest(proxy.mediaUrl, 'GET', `/media/${MEDIA_ID}`, {
    headerLines: ['Host: proxy', 'Connection: close'],
  })
  assert.equal(full.status, 200)
  assert.equal(sha256(full.body), sha256(expectedBytes(0, 4095)))
  const names = full.lines.map(([name]) => name)
  for (const name of names) assert.ok(CLIENT_RESPONSE_HEADERS.has(name), `${name} must not reach the client`)
  assert.equal(new Set(names).size, names.length, 'no header sent twice')
  assert.equal(full.headers['content-type'], 'image/png')
  assert.equal(full.headers['content-length'], '4096')
  assert.equal(full.headers['content-disposition'], 'inline; filename="pic.png"')
  assert.equal(full.headers['content-security-policy'], "default-src 'none'; sandbox")
  assert.equal(full.headers['x-content-type-options'], 'nosniff')
  assert.equal(full.headers['cache-control'], 'private, max-age=172800')
  assert.equal(full.headers['accept-ranges'], 'bytes')
  assert.equal(full.headers.etag, item.etag)
  assert.equal(full.headers['last-modified'], item.lastModified.toUTCString())
  assert.match(full.headers['x-request-id'] ?? '', UUID, 'the proxy id, not the upstream one')
  assert.equal(full.headers.connection, 'close')
  assert.equal(full.headers['keep-alive'], undefined)

  const partial = await request(url, { headers: { range: 'bytes=10-19' } })
  assert.deepEqual(Buffer.from(await partial.body.arrayBuffer()), expectedBytes(10, 19))
  assert.equal(partial.statusCode, 206)
  assert.equal(partial.headers['content-range'], 'bytes 10-19/4096')
  assert.notEqual(partial.headers['keep-alive'], 'timeout=999')

  emulator.faults.push({ status: 429, retryAfter: '7' })
  const limited = await request(url)
  const limitedBody = await limited.body.text()
  assert.equal(limited.statusCode, 429)
  assert.equal(limited.headers['retry-after'], '7')
  assert.equal(limited.headers['content-type'], 'application/problem+json')
  assert.match(limitedBody, /Injected fault/, "upstream's own 429 body")

  for (const res of [partial, limited]) {
    for (const name of Object.keys(res.headers)) {
      assert.ok(CLIENT_RESPONSE_HEADERS.has(name), `${name} must not reach the client`)
    }
  }
})

test('an upstream 401 with WWW-Authenticate reaches the client as a 502 without it', async (t) => {
  // An emulator that expects another application refuses every token the proxy mints.
  const emulator = await startEmulator(t, { applicationId: '11111111-2222-4333-8444-555555555555' })
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
  const body = (await res.body.json()) as Record<string, unknown>
  assert.equal(res.statusCode, 502)
  assert.equal(res.headers['www-authenticate'], undefined)
  assert.equal(res.headers['set-cookie'], undefined)
  assert.equal(res.headers.server, undefined)
  assert.equal(body.requestId, res.headers['x-request-id'])
  await waitFor(() => emulator.requests.length === 2 && emulator.requests.every((r) => r.closed), 'two 401s')
  assert.deepEqual(
    emulator.requests.map((r) => r.status),
    [401, 401],
  )
})

test('a valid X-Request-Id is sent upstream and echoed; an invalid one is replaced by a generated one', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 16)
  const proxy = await startProxy(t, emulator.url)
  const path = `/media/${MEDIA_ID}`

  const valid = ['abc', 'req-123.abc:XYZ_9', 'a'.repeat(128), '4f6c1c1e-7d7e-4b0e-9c55-0a0b0c0d0e0f']
  const invalid = [
    'a'.repeat(129),
    'has space',
    'semi;colon',
    'slash/x',
    '<script>',
    'quote"x',
    'percent%20',
    'caf\xe9',
  ]
  const cases: [string[], string | undefined][] = [
    ...valid.map((id): [string[], string] => [[`X-Request-Id: ${id}`], id]),
    ...invalid.map((id): [string[], undefined] => [[`X-Request-Id: ${id}`], undefined]),
    [['X-Request-Id: one', 'X-Request-Id: two'], undefined],
    [['X-Request-Id:'], undefined],
    [[], undefined],
  ]

  for (const [index, [lines, kept]] of cases.entries()) {
    const what = lines.join(' | ') || 'no X-Request-Id'
    const res = await rawRequest(proxy.mediaUrl, 'GET', path, {
      headerLines: ['Host: proxy', 'Connection: close', ...lines],
    })
    assert.equal(res.status, 200, what)
    const echoed = res.headers['x-request-id']
    assert.equal(res.lines.filter(([name]) => name === 'x-request-id').length, 1, `${what}: one X-Request-Id`)
    if (kept === undefined) assert.match(echoed ?? '', UUID, `${what}: replaced by a generated id`)
    else assert.equal(echoed, kept, `${what}: kept`)
    const upstream = await answered(emulator, index)
    assert.equal(upstream.headers['x-request-id'], echoed, `${what}: the same id went upstream`)
  }
  const generated = emulator.requests.map((r) => r.headers['x-request-id']).filter((id) => UUID.test(String(id)))
  assert.equal(new Set(generated).size, generated.length, 'every generated id is fresh')
})

test('every response carries X-Request-Id, and problem bodies name the same id', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 16)
  const proxy = await startProxy(t, emulator.url)
  const keyed = await startProxy(t, emulator.url, { INBOUND_API_KEYS: 'the-right-client-key-0123' })

  const cases: [string, string, string, number][] = [
    ['200', proxy.mediaUrl, `GET /media/${MEDIA_ID}`, 200],
    ['206', proxy.mediaUrl, `GET /media/${MEDIA_ID}\r\nRange: bytes=0-1`, 206],
    ['304', proxy.mediaUrl, `GET /media/${MEDIA_ID}\r\nIf-None-Match: *`, 304],
    ['HEAD', proxy.mediaUrl, `HEAD /media/${MEDIA_ID}`, 200],
    ['400 bad id', proxy.mediaUrl, 'GET /media/not-a-uuid', 400],
    ['404 other path', proxy.mediaUrl, 'GET /elsewhere', 404],
    ['405 other method', proxy.mediaUrl, `DELETE /media/${MEDIA_ID}`, 405],
    ['401 no client key', keyed.mediaUrl, `GET /media/${MEDIA_ID}`, 401],
    ['upstream 404', proxy.mediaUrl, `GET /v3/media/${UNKNOWN_ID}`, 404],
  ]
  for (const [what, base, requestLine, status] of cases) {
    const [line = '', ...extra] = requestLine.split('\r\n')
    const [method = 'GET', path = '/'] = line.split(' ')
    const res = await rawRequest(base, method, path, { headerLines: ['Host: proxy', 'Connection: close', ...extra] })
    assert.equal(res.status, status, what)
    const id = res.headers['x-request-id']
    assert.match(id ?? '', UUID, `${what}: X-Request-Id`)
    if (status >= 400 && what !== 'upstream 404') {
      assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json(;|$)/, what)
      const problem = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>
      assert.equal(problem.requestId, id, `${what}: requestId`)
    }
  }
  const upstream404 = await answered(emulator, emulator.requests.length - 1)
  assert.equal(upstream404.url, `/v3/media/${UNKNOWN_ID}`)
  assert.equal(upstream404.status, 404, "the upstream 404 was the emulator's")
})

// undici 7 sent the Range below as UTF-8 (c3 bf); undici 8 writes header strings as latin1.
test('header bytes pass through as they are, both ways: an ETag with byte 0xe9 matches, a Range with 0xff reaches Vonage as 0xff', async (t) => {
  let upstreamHead = Buffer.alloc(0)
  const upstream = await startRawUpstream(t, (socket, head) => {
    upstreamHead = Buffer.from(head, 'latin1')
    socket.write(Buffer.from('HTTP/1.1 304 Not Modified\r\nETag: "caf\xe9"\r\n\r\n', 'latin1'))
  })
  const proxy = await startProxy(t, upstream)
  const { hostname, port } = new URL(proxy.mediaUrl)
  const socket = connect(Number(port), hostname)
  t.after(() => socket.destroy())
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.write(
    Buffer.from(
      `GET /media/${MEDIA_ID} HTTP/1.1\r\nHost: proxy\r\nIf-None-Match: "caf\xe9"\r\nRange: bytes=0-\xff\r\nConnection: close\r\n\r\n`,
      'latin1',
    ),
  )
  await closed
  assert.ok(upstreamHead.includes(Buffer.from('if-none-match: "caf\xe9"', 'latin1')), 'the ETag bytes reached Vonage')
  assert.ok(upstreamHead.includes(Buffer.from('range: bytes=0-\xff', 'latin1')), 'the Range bytes reached Vonage')
  assert.ok(!upstreamHead.includes(Buffer.from([0xc3])), 'nothing was re-encoded as UTF-8')
  const answer = Buffer.concat(chunks)
  assert.match(answer.toString('latin1'), /^HTTP\/1\.1 304 /)
  assert.ok(answer.includes(Buffer.from('etag: "caf\xe9"', 'latin1')), 'the ETag bytes reached the client')
})

test('a file name Vonage sends in UTF-8 or latin1 reaches the client as RFC 6266 filename*, and the body follows', async (t) => {
  const names: Array<[Buffer, string]> = [
    [
      Buffer.from('attachment; filename="日本.png"', 'utf8'),
      `attachment; filename="__.png"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.png`,
    ],
    [
      // A PDF is no image, audio or video: it is always a download, keeping its name.
      Buffer.from('inline; filename="caf\xe9.pdf"', 'latin1'),
      `attachment; filename="caf_.pdf"; filename*=ISO-8859-1''caf%E9.pdf`,
    ],
    [Buffer.from('attachment; filename="plain.txt"', 'latin1'), 'attachment; filename="plain.txt"'],
  ]
  let index = 0
  const upstream = await startRawUpstream(t, (socket) => {
    const [disposition] = names[index++] as [Buffer, string]
    socket.write(
      Buffer.concat([
        Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: 5\r\nContent-Disposition: '),
        disposition,
        Buffer.from('\r\n\r\nhello'),
      ]),
    )
  })
  const proxy = await startProxy(t, upstream)
  for (const [, expected] of names) {
    const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-disposition'], expected)
    assert.equal(await res.body.text(), 'hello')
  }
})
