// Upstream TLS is verified: a self-signed upstream gets 502, unless its CA is given in NODE_EXTRA_CA_CERTS.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import { MEDIA_ID, proxyEnv, spawnProxy, startEmulator, startPassThrough, startProxy, waitFor } from './helpers.js'

const SIZE = 4096

interface HttpsUpstream {
  url: string
  /** Handshakes that completed, and the errors of those the client broke off. */
  handshakes: number
  handshakeErrors: string[]
}

interface Certificate {
  /** PEM paths: the self-signed certificate is its own CA. */
  certPath: string
  keyPath: string
}

/** A throwaway self-signed certificate for 127.0.0.1, made with the openssl CLI. */
function makeCertificate(t: TestContext): Certificate {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-tls-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const certPath = join(dir, 'upstream.pem')
  const keyPath = join(dir, 'upstream-key.pem')
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      keyPath,
      '-out',
      certPath,
    ],
    { stdio: 'ignore', timeout: 30_000 },
  )
  return { certPath, keyPath }
}

/**
 * An HTTPS server with that certificate, passing every request on to the emulator, which
 * still checks the token and records what arrived. Resolves to the upstream base URL.
 */
async function startHttpsUpstream(
  t: TestContext,
  emulator: VonageEmulator,
  certificate: Certificate,
): Promise<HttpsUpstream> {
  const { server, url } = await startPassThrough(t, emulator, {
    tls: { cert: readFileSync(certificate.certPath), key: readFileSync(certificate.keyPath) },
  })
  const upstream: HttpsUpstream = {
    url,
    handshakes: 0,
    handshakeErrors: [],
  }
  server.on('secureConnection', () => upstream.handshakes++)
  server.on('tlsClientError', (error) => upstream.handshakeErrors.push(error.message))
  return upstream
}

async function assertRefused(mediaUrl: string, upstream: HttpsUpstream, emulator: VonageEmulator): Promise<void> {
  const res = await request(`${mediaUrl}/media/${MEDIA_ID}`)
  const text = await res.body.text()
  assert.equal(res.statusCode, 502)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  const problem = JSON.parse(text) as Record<string, unknown>
  assert.equal(problem.status, 502)
  assert.equal(problem.requestId, res.headers['x-request-id'])
  const { hostname, port } = new URL(upstream.url)
  for (const leak of [hostname, port, 'localhost', 'SELF_SIGNED', 'self-signed', 'self signed', 'UNABLE_TO', 'ERR_']) {
    assert.ok(!text.includes(leak), `the problem body does not name ${leak}: ${text}`)
  }
  assert.deepEqual(emulator.requests, [], 'no request got past the TLS handshake')
  await waitFor(() => upstream.handshakeErrors.length > 0, 'the upstream saw the handshake broken off')
  assert.equal(upstream.handshakes, 0, 'no TLS handshake completed')
}

test('an HTTPS upstream with a self-signed certificate is refused with 502', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const upstream = await startHttpsUpstream(t, emulator, makeCertificate(t))
  const proxy = await startProxy(t, upstream.url)

  await assertRefused(proxy.mediaUrl, upstream, emulator)
  // The operator, unlike the client, learns why: the TLS error code, nothing more.
  const failure = proxy.logs.find((line) => line.msg === 'Vonage request failed')
  assert.equal(failure?.err, 'upstream-unavailable')
  assert.match(String(failure?.cause), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/)
})

test('a proxy process without the CA refuses the self-signed upstream', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const upstream = await startHttpsUpstream(t, emulator, makeCertificate(t))
  const { mediaUrl } = await spawnProxy(t, proxyEnv(upstream.url))

  await assertRefused(mediaUrl, upstream, emulator)
})

test('the self-signed upstream is accepted when its CA is supplied with NODE_EXTRA_CA_CERTS', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, SIZE)
  const certificate = makeCertificate(t)
  const upstream = await startHttpsUpstream(t, emulator, certificate)
  const { mediaUrl } = await spawnProxy(t, { ...proxyEnv(upstream.url), NODE_EXTRA_CA_CERTS: certificate.certPath })

  const res = await request(`${mediaUrl}/media/${MEDIA_ID}`)
  const body = Buffer.from(await res.body.arrayBuffer())
  assert.equal(res.statusCode, 200)
  assert.equal(body.length, SIZE)
  for (let i = 0; i < SIZE; i++) assert.equal(body[i], i % 251, `byte ${i}`)
  assert.equal(emulator.requests.length, 1)
  assert.equal(emulator.requests[0]?.url, `/v3/media/${MEDIA_ID}`)
  assert.ok(emulator.requests[0]?.jti, 'the emulator accepted the token sent over TLS')
  assert.ok(upstream.handshakes >= 1, 'the request came over a verified TLS connection')
})
