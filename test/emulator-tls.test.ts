// The emulator over TLS with a throwaway CA: clients that trust only that CA reach it under a
// Vonage host name (SNI and Host) while connecting to 127.0.0.1, as the proxy will through
// UPSTREAM_CONNECT_TO; a name its certificate does not cover fails verification.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { Agent, request as undiciRequest } from 'undici'
import { TokenSigner } from '../src/credentials/token-cache.js'
import { sampleWav } from '../src/emulator/media-store.js'
import { makeThrowawayCa } from '../src/emulator/throwaway-ca.js'
import { APPLICATION_ID, keys, MEDIA_ID, REPO_ROOT, startEmulator, startTlsEmulator, waitFor } from './helpers.js'

const RECORDING_ID = 'aaaaaaaa-1111-4222-8333-444444444444'
const EU = 'api-eu.nexmo.com'
const signer = new TokenSigner(keys.privateKey, APPLICATION_ID, 900)

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** One request over node:https to 127.0.0.1, sending `servername` as SNI and Host. */
function httpsGet(
  baseUrl: string,
  path: string,
  options: { servername: string; ca?: string; token?: string; method?: string; headers?: Record<string, string> },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: new URL(baseUrl).port,
        servername: options.servername,
        ...(options.ca ? { ca: options.ca } : {}),
        agent: false,
        method: options.method ?? 'GET',
        path,
        headers: {
          host: options.servername,
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.once('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        )
        res.once('error', reject)
      },
    )
    req.once('error', reject)
    req.end()
  })
}

async function token(): Promise<string> {
  return (await signer.sign()).value
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-emulator-tls-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('the throwaway CA signs a server certificate for the names, 127.0.0.1 and localhost, and one naming others only', (t) => {
  const dir = tempDir(t)
  const ca = makeThrowawayCa(dir, [EU, 'api.vonage.com'], { alsoSigned: { names: ['other.example.com'] } })
  const caCert = new X509Certificate(ca.caPem)
  const server = new X509Certificate(ca.certPem)
  const other = new X509Certificate(ca.alsoSigned?.certPem ?? '')

  assert.equal(caCert.ca, true, 'basicConstraints CA:TRUE')
  assert.equal(caCert.checkIssued(caCert), true, 'the CA is self-signed')
  assert.equal(server.ca, false)
  assert.equal(server.subjectAltName, `DNS:${EU}, DNS:api.vonage.com, DNS:localhost, IP Address:127.0.0.1`)
  assert.deepEqual(server.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extendedKeyUsage serverAuth')
  assert.equal(other.subjectAltName, 'DNS:other.example.com', 'the second certificate names the other hosts only')
  for (const leaf of [server, other]) {
    assert.ok(leaf.checkIssued(caCert) && leaf.verify(caCert.publicKey), 'signed by the throwaway CA')
    const days = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 86_400_000
    assert.equal(days, 1, 'valid one day by default')
  }
  assert.notEqual(server.serialNumber, other.serialNumber)
  const longer = new X509Certificate(makeThrowawayCa(tempDir(t), [EU], { days: 30 }).certPem)
  assert.equal((Date.parse(longer.validTo) - Date.parse(longer.validFrom)) / 86_400_000, 30, 'days is honoured')
  for (const path of [ca.keyPath, ca.alsoSigned?.keyPath ?? '']) assert.equal(statSync(path).mode & 0o777, 0o600)
  assert.throws(
    () => statSync(join(dir, 'ca-key.pem')),
    { code: 'ENOENT' },
    'the CA key is gone: nothing more can be issued',
  )
  assert.match(ca.caPath, /ca\.pem$/)
  assert.throws(() => makeThrowawayCa(dir, ['bad name\n[x]']), /not a host name/)
})

test('without openssl on PATH, the error says openssl is needed', (t) => {
  const path = process.env.PATH
  t.after(() => {
    process.env.PATH = path
  })
  process.env.PATH = tempDir(t)
  assert.throws(() => makeThrowawayCa(tempDir(t), [EU]), {
    message: /^the openssl command is needed to make a throwaway CA/,
  })
})

test('over TLS the emulator serves a recording to a client trusting only the CA, recording SNI and Host', async (t) => {
  const { emulator, ca } = await startTlsEmulator(t, [EU])
  emulator.files.addWav(RECORDING_ID, 1)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  assert.match(emulator.url, /^https:\/\/127\.0\.0\.1:\d+$/)

  const res = await httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, {
    servername: EU,
    ca: ca.caPem,
    token: await token(),
  })
  assert.equal(res.status, 200)
  assert.equal(res.headers['content-type'], 'audio/wav')
  assert.deepEqual(res.body, sampleWav(1))
  const [recorded] = emulator.requests
  assert.equal(recorded?.host, EU)
  assert.equal(recorded?.servername, EU)
  assert.ok(recorded?.jti, 'the token was accepted')

  const media = await httpsGet(emulator.url, `/v1/files/${MEDIA_ID}`, {
    servername: EU,
    ca: ca.caPem,
    token: await token(),
  })
  assert.equal(media.status, 404, 'a media id is not a recording id')
  const recording = await httpsGet(emulator.url, `/v3/media/${RECORDING_ID}`, {
    servername: EU,
    ca: ca.caPem,
    token: await token(),
  })
  assert.equal(recording.status, 404, 'a recording id is not a media id')
  const unsigned = await httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, { servername: EU, ca: ca.caPem })
  assert.equal(unsigned.status, 401, 'recordings take the same token')
})

test('undici, given the CA and the SNI name in connect, reaches the TLS emulator at 127.0.0.1', async (t) => {
  const { emulator, ca } = await startTlsEmulator(t, [EU])
  emulator.media.addSynthetic(MEDIA_ID, 2048)
  const dispatcher = new Agent({ connect: { ca: ca.caPem, servername: EU } })
  t.after(() => dispatcher.close())

  const res = await undiciRequest(`${emulator.url}/v3/media/${MEDIA_ID}`, {
    dispatcher,
    headers: { host: EU, authorization: `Bearer ${await token()}` },
  })
  assert.equal(res.statusCode, 200)
  assert.equal((await res.body.arrayBuffer()).byteLength, 2048)
  assert.equal(emulator.requests[0]?.servername, EU)
  assert.equal(emulator.requests[0]?.host, EU)
})

test('a name the certificate does not cover fails verification, and never reaches the emulator', async (t) => {
  const us = 'api-us.nexmo.com'
  const { emulator, ca } = await startTlsEmulator(t, [EU, us], { narrowFor: [us] })
  emulator.files.addWav(RECORDING_ID, 1)

  // Covered by the default certificate, but the emulator presents the narrow one for it.
  await assert.rejects(httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, { servername: us, ca: ca.caPem }), {
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
  })
  // Not on the default certificate at all.
  await assert.rejects(
    httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, { servername: 'api.vonage.com', ca: ca.caPem }),
    { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
  )
  // A client that does not trust the throwaway CA refuses even a covered name.
  await assert.rejects(httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, { servername: EU }), {
    code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  })
  assert.deepEqual(emulator.requests, [], 'no request got past verification')

  const res = await httpsGet(emulator.url, `/v1/files/${RECORDING_ID}`, {
    servername: EU,
    ca: ca.caPem,
    token: await token(),
  })
  assert.equal(res.status, 200, 'the same emulator serves a covered name')
})

test('over plain http the emulator records the Host header and no SNI name', async (t) => {
  const emulator = await startEmulator(t)
  assert.match(emulator.url, /^http:\/\//)
  const res = await undiciRequest(`${emulator.url}/v1/files/${RECORDING_ID}`)
  await res.body.dump()
  assert.equal(res.statusCode, 401)
  assert.equal(emulator.requests[0]?.host, new URL(emulator.url).host)
  assert.equal(emulator.requests[0]?.servername, undefined)
})

test('npm run emulator serves TLS from EMULATOR_TLS_CERT_PATH/KEY_PATH and prints its recording URL', async (t) => {
  const dir = tempDir(t)
  const ca = makeThrowawayCa(dir, [EU])
  const publicKeyPath = join(dir, 'application.pub')
  writeFileSync(publicKeyPath, keys.publicPem)
  const env = {
    PATH: process.env.PATH ?? '',
    EMULATOR_PUBLIC_KEY_PATH: publicKeyPath,
    EMULATOR_APPLICATION_ID: APPLICATION_ID,
    EMULATOR_PORT: '0',
  }
  const run = (extra: Record<string, string>) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/emulator/main.ts'], {
      cwd: REPO_ROOT,
      env: { ...env, ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const output = { stdout: '', stderr: '' }
    child.stdout.on('data', (chunk) => {
      output.stdout += chunk
    })
    child.stderr.on('data', (chunk) => {
      output.stderr += chunk
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    t.after(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    })
    return { child, output, exited }
  }

  const half = run({ EMULATOR_TLS_CERT_PATH: ca.certPath })
  assert.equal(await half.exited, 78, 'a certificate without its key is a configuration error')
  assert.match(half.output.stderr, /EMULATOR_TLS_CERT_PATH and EMULATOR_TLS_KEY_PATH/)

  const { child, output, exited } = run({ EMULATOR_TLS_CERT_PATH: ca.certPath, EMULATOR_TLS_KEY_PATH: ca.keyPath })
  const recordingUrl = await waitFor(
    () => /(https:\/\/127\.0\.0\.1:\d+)(\/v1\/files\/[0-9a-f-]{36})/.exec(output.stdout),
    `the emulator to print its recording URL; stderr: ${output.stderr}`,
    20_000,
  )
  const [, base = '', path = ''] = recordingUrl
  const res = await httpsGet(base, path, { servername: EU, ca: ca.caPem, token: await token() })
  assert.equal(res.status, 200)
  assert.equal(res.headers['content-type'], 'audio/wav')
  assert.equal(res.body.subarray(0, 4).toString('latin1'), 'RIFF')
  child.kill('SIGTERM')
  assert.equal(await exited, 0)
})
