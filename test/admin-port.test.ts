// Proves the admin port serves health, readiness, metrics and /quitquitquit, and that media and admin routes never cross ports.
import assert from 'node:assert/strict'
import http from 'node:http'
import { test } from 'node:test'
import { request } from 'undici'
import { MEDIA_ID, type RunningProxy, startEmulator, startProxy, waitFor } from './helpers.js'

const BIG_ID = '2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6'

async function call(url: string, method: 'GET' | 'POST' = 'GET') {
  const res = await request(url, { method })
  return { status: res.statusCode, type: String(res.headers['content-type']), body: await res.body.text() }
}

/** Starts a media download that the emulator leaves hanging after `bytes`; resolves once they arrived. */
function holdDownload(proxy: RunningProxy, bytes: number): Promise<http.ClientRequest> {
  return new Promise((resolve, reject) => {
    let received = 0
    const req = http.get(`${proxy.mediaUrl}/media/${BIG_ID}`, (res) => {
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received >= bytes) resolve(req)
      })
    })
    req.on('error', (err) => {
      if (received < bytes) reject(err)
    })
  })
}

test('/healthz, /readyz and /metrics answer on the admin port', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  const healthz = await call(`${proxy.adminUrl}/healthz`)
  assert.equal(healthz.status, 200)
  const readyz = await call(`${proxy.adminUrl}/readyz`)
  assert.equal(readyz.status, 200, 'a token was signed at start-up')

  const metrics = await call(`${proxy.adminUrl}/metrics`)
  assert.equal(metrics.status, 200)
  assert.match(metrics.type, /^text\/plain; version=0\.0\.4/)
  assert.match(metrics.body, /^# TYPE media_proxy_requests_total counter$/m)
  assert.equal(emulator.requests.length, 0, 'health and readiness never call the upstream')
})

test('/readyz is 503 without a usable token, and 200 again once one is signed', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  const proxy = await startProxy(t, emulator.url)

  proxy.app.tokens.invalidate()
  const readyz = await call(`${proxy.adminUrl}/readyz`)
  assert.equal(readyz.status, 503)
  assert.match(readyz.type, /^application\/problem\+json/)
  assert.equal(JSON.parse(readyz.body).status, 503)
  assert.equal((await call(`${proxy.adminUrl}/healthz`)).status, 200)
  assert.equal(emulator.requests.length, 0)

  assert.equal((await call(`${proxy.mediaUrl}/media/${MEDIA_ID}`)).status, 200)
  assert.equal((await call(`${proxy.adminUrl}/readyz`)).status, 200)
})

test('media routes are not served on the admin port, nor admin routes on the media port', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  let shutdownRequests = 0
  const proxy = await startProxy(t, emulator.url, {}, { onShutdownRequest: () => shutdownRequests++ })

  for (const path of [`/media/${MEDIA_ID}`, `/v3/media/${MEDIA_ID}`]) {
    const res = await call(`${proxy.adminUrl}${path}`)
    assert.equal(res.status, 404, `admin port ${path}`)
    assert.match(res.type, /^application\/problem\+json/)
  }
  assert.equal(emulator.requests.length, 0, 'nothing reached the upstream through the admin port')

  for (const path of ['/metrics', '/healthz', '/readyz']) {
    const res = await call(`${proxy.mediaUrl}${path}`)
    assert.equal(res.status, 404, `media port ${path}`)
    assert.match(res.type, /^application\/problem\+json/)
    assert.doesNotMatch(res.body, /media_proxy_/)
  }
  const quit = await call(`${proxy.mediaUrl}/quitquitquit`, 'POST')
  assert.equal(quit.status, 404)
  assert.equal(shutdownRequests, 0)
  assert.equal(proxy.app.draining, false)
})

test('/readyz turns 503 problem+json at once while draining; close waits for the held request', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(BIG_ID, 1024 * 1024)
  const proxy = await startProxy(t, emulator.url)
  emulator.faults.push({ stallAfterBytes: 1024 })
  const held = await holdDownload(proxy, 1024)

  let closed = false
  const closing = proxy.app.close(30_000).then(() => {
    closed = true
  })
  const readyz = await call(`${proxy.adminUrl}/readyz`)
  assert.equal(readyz.status, 503)
  assert.match(readyz.type, /^application\/problem\+json/)
  const problem = JSON.parse(readyz.body)
  assert.deepEqual(Object.keys(problem).sort(), ['detail', 'requestId', 'status', 'title', 'type'])
  assert.equal(problem.status, 503)
  assert.equal((await call(`${proxy.adminUrl}/healthz`)).status, 200, 'alive while draining')
  assert.equal((await call(`${proxy.adminUrl}/metrics`)).status, 200, 'still scraped while draining')
  assert.equal(closed, false, 'close waits for the in-flight response')

  held.destroy()
  await closing
  assert.equal(proxy.app.inFlight.count, 0)
})

test('POST /quitquitquit answers 202, then calls the shutdown hook', async (t) => {
  const emulator = await startEmulator(t)
  let shutdownRequests = 0
  const proxy = await startProxy(t, emulator.url, {}, { onShutdownRequest: () => shutdownRequests++ })

  const res = await call(`${proxy.adminUrl}/quitquitquit`, 'POST')
  assert.equal(res.status, 202)
  await waitFor(() => shutdownRequests === 1, 'the shutdown hook to be called')
  assert.equal((await call(`${proxy.adminUrl}/quitquitquit`)).status, 404, 'GET does not shut down')
  assert.equal(shutdownRequests, 1)
})

test('POST /quitquitquit from an address that is not loopback gets 403 and stops nothing', async (t) => {
  const emulator = await startEmulator(t)
  let shutdownRequests = 0
  const proxy = await startProxy(t, emulator.url, {}, { onShutdownRequest: () => shutdownRequests++ })
  // The admin port listens beyond the pod (ADMIN_HOST=0.0.0.0); a peer elsewhere is simulated,
  // since a test may only connect to loopback.
  for (const remoteAddress of ['10.1.2.3', '::ffff:10.1.2.3', '2001:db8::1']) {
    const res = await proxy.app.admin.inject({ method: 'POST', url: '/quitquitquit', remoteAddress })
    assert.equal(res.statusCode, 403, remoteAddress)
    assert.equal(res.headers['content-type'], 'application/problem+json')
    assert.equal((JSON.parse(res.body) as { status: number }).status, 403)
  }
  for (const remoteAddress of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
    const res = await proxy.app.admin.inject({ method: 'POST', url: '/quitquitquit', remoteAddress })
    assert.equal(res.statusCode, 202, remoteAddress)
  }
  await waitFor(() => shutdownRequests === 3, 'the three loopback requests to ask for shutdown')
})
