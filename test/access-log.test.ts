// Proves every media request writes exactly one "request completed" JSON line with the contract's fields, aborted ones included.
import assert from 'node:assert/strict'
import http from 'node:http'
import { test } from 'node:test'
import { request } from 'undici'
import {
  APPLICATION_ID,
  accessLines,
  MEDIA_ID,
  type RunningProxy,
  startEmulator,
  startProxy,
  waitFor,
} from './helpers.js'

// Installed before any app is built: fastify reports deprecations (FSTDEP023 for the top-level
// disableRequestLogging) through process warnings, once per process.
const warnings: Array<Error & { code?: string }> = []
process.on('warning', (warning) => warnings.push(warning))

const MISSING_ID = '0f0f0f0f-1111-4222-8333-444444444444'
const BIG_ID = '2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6'
const USER_AGENT = 'access-log-test/1.0'
const RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
/** pino's own fields, the contract's, and the message: nothing else (no headers, no req/res objects). */
const FIELDS = [
  'level',
  'time',
  'pid',
  'hostname',
  'reqId',
  'method',
  'path',
  'mediaId',
  'status',
  'bytes',
  'durationMs',
  'application',
  'upstreamHost',
  'upstreamStatus',
  'upstreamMs',
  'retries',
  'remoteAddress',
  'userAgent',
  'aborted',
  'msg',
].sort()

let sequence = 0

async function send(
  proxy: RunningProxy,
  path: string,
  method: 'GET' | 'HEAD' = 'GET',
): Promise<{ reqId: string; status: number; bytes: number }> {
  const reqId = `access-log-${++sequence}`
  const res = await request(`${proxy.mediaUrl}${path}`, {
    method,
    headers: { 'x-request-id': reqId, 'user-agent': USER_AGENT },
  })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { reqId, status: res.statusCode, bytes: body.length }
}

/** Reads until `bytes` arrived, then destroys the connection mid-body. */
function downloadThenAbort(
  proxy: RunningProxy,
  path: string,
  bytes: number,
): Promise<{ reqId: string; bytes: number }> {
  const reqId = `access-log-${++sequence}`
  return new Promise((resolve, reject) => {
    let received = 0
    const req = http.get(`${proxy.mediaUrl}${path}`, { headers: { 'x-request-id': reqId, 'user-agent': USER_AGENT } })
    req.on('response', (res) => {
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received >= bytes) {
          req.destroy()
          resolve({ reqId, bytes: received })
        }
      })
    })
    req.on('error', (err) => {
      if (received < bytes) reject(err)
    })
  })
}

/** The one access line of a request, once it has been written; fails on two. */
async function lineOf(proxy: RunningProxy, reqId: string): Promise<Record<string, unknown>> {
  const lines = await waitFor(() => {
    const found = accessLines(proxy).filter((line) => line.reqId === reqId)
    return found.length > 0 ? found : undefined
  }, `the access line of ${reqId}`)
  assert.equal(lines.length, 1, `one access line for ${reqId}`)
  const line = lines[0] as Record<string, unknown>
  assert.deepEqual(Object.keys(line).sort(), FIELDS)
  assert.equal(line.level, 30)
  assert.equal(line.remoteAddress, '127.0.0.1')
  assert.equal(line.userAgent, USER_AGENT)
  assert.equal(typeof line.durationMs, 'number')
  assert.ok((line.durationMs as number) >= 0)
  if (line.upstreamMs !== null) assert.ok((line.upstreamMs as number) <= (line.durationMs as number))
  assert.ok(!String(line.path).includes('?'), 'no query string in path')
  return line
}

test('one "request completed" line per media request, with the contract fields', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  emulator.media.addSynthetic(BIG_ID, 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, {}, { retry: RETRY })
  const reqIds: string[] = []

  await t.test('success: 1 KiB body, no query string in the path', async () => {
    const res = await send(proxy, `/media/${MEDIA_ID}?secret=hunter2&x=1`)
    reqIds.push(res.reqId)
    assert.equal(res.status, 200)
    const line = await lineOf(proxy, res.reqId)
    assert.deepEqual(
      { ...line, level: 0, time: 0, pid: 0, hostname: '', durationMs: 0, upstreamMs: 0 },
      {
        level: 0,
        time: 0,
        pid: 0,
        hostname: '',
        reqId: res.reqId,
        method: 'GET',
        path: `/media/${MEDIA_ID}`,
        mediaId: MEDIA_ID,
        status: 200,
        bytes: 1024,
        durationMs: 0,
        application: APPLICATION_ID,
        upstreamHost: '127.0.0.1',
        upstreamStatus: 200,
        upstreamMs: 0,
        retries: 0,
        remoteAddress: '127.0.0.1',
        userAgent: USER_AGENT,
        aborted: false,
        msg: 'request completed',
      },
    )
    assert.equal(typeof line.upstreamMs, 'number')
  })

  await t.test('HEAD: 0 bytes', async () => {
    const res = await send(proxy, `/v3/media/${MEDIA_ID}`, 'HEAD')
    reqIds.push(res.reqId)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.method, 'HEAD')
    assert.equal(line.path, `/v3/media/${MEDIA_ID}`)
    assert.equal(line.status, 200)
    assert.equal(line.bytes, 0)
    assert.equal(line.aborted, false)
  })

  await t.test('4xx: a bad id, answered before any upstream request', async () => {
    const res = await send(proxy, '/media/not-a-uuid?x=1')
    reqIds.push(res.reqId)
    assert.equal(res.status, 400)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.path, '/media/not-a-uuid')
    assert.equal(line.status, 400)
    assert.equal(line.bytes, res.bytes)
    assert.equal(line.mediaId, null)
    assert.equal(line.upstreamStatus, null)
    assert.equal(line.upstreamMs, null)
    assert.equal(line.retries, 0)
    assert.equal(line.aborted, false)
  })

  await t.test('4xx: upstream 404 passed through', async () => {
    const res = await send(proxy, `/media/${MISSING_ID}`)
    reqIds.push(res.reqId)
    assert.equal(res.status, 404)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.status, 404)
    assert.equal(line.upstreamStatus, 404)
    assert.equal(line.mediaId, MISSING_ID)
    assert.equal(line.bytes, res.bytes)
    assert.ok(res.bytes > 0)
  })

  await t.test('retried: one upstream 503, then 200', async () => {
    emulator.faults.push({ status: 503 })
    const res = await send(proxy, `/media/${MEDIA_ID}`)
    reqIds.push(res.reqId)
    assert.equal(res.status, 200)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.status, 200)
    assert.equal(line.upstreamStatus, 200)
    assert.equal(line.retries, 1)
    assert.equal(line.bytes, 1024)
    assert.equal(line.aborted, false)
  })

  await t.test('5xx: 502 after two retries of upstream 503s', async () => {
    emulator.faults.push({ status: 503 }, { status: 503 }, { status: 503 })
    const res = await send(proxy, `/media/${MEDIA_ID}`)
    reqIds.push(res.reqId)
    assert.equal(res.status, 502)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.status, 502)
    assert.equal(line.upstreamStatus, 503)
    assert.equal(line.retries, 2)
    assert.equal(line.bytes, res.bytes)
    assert.equal(line.aborted, false)
  })

  await t.test('aborted: the client goes away mid-body', async () => {
    const sent = 64 * 1024
    emulator.faults.push({ stallAfterBytes: sent })
    const res = await downloadThenAbort(proxy, `/media/${BIG_ID}`, sent)
    reqIds.push(res.reqId)
    assert.equal(res.bytes, sent)
    const line = await lineOf(proxy, res.reqId)
    assert.equal(line.status, 200)
    assert.equal(line.upstreamStatus, 200)
    assert.equal(line.aborted, true)
    assert.equal(line.bytes, sent, 'bytes really sent, not the Content-Length')
  })

  await t.test('admin requests write no access line', async () => {
    const before = accessLines(proxy).length
    for (const path of ['/metrics', '/healthz', '/readyz']) {
      const res = await request(`${proxy.adminUrl}${path}`)
      await res.body.dump()
      assert.equal(res.statusCode, 200)
    }
    assert.equal(accessLines(proxy).length, before)
  })

  await t.test("exactly one line per request overall, and none of fastify's own", async () => {
    const lines = accessLines(proxy)
    assert.deepEqual(
      lines.map((line) => line.reqId),
      reqIds,
    )
    for (const line of proxy.logs) {
      assert.notEqual(line.msg, 'incoming request')
      assert.ok(!('req' in line) && !('res' in line) && !('responseTime' in line), JSON.stringify(line))
    }
  })

  await t.test('no fastify deprecation warning (FSTDEP023: top-level disableRequestLogging)', async () => {
    await new Promise((resolve) => setImmediate(resolve))
    const deprecations = warnings.filter((warning) => warning.code?.startsWith('FSTDEP'))
    assert.deepEqual(
      deprecations.map((warning) => `${warning.code}: ${warning.message}`),
      [],
    )
  })
})
