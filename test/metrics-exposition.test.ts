// Proves /metrics on the admin port exposes every contract metric with its type and labels, and that they move as requests pass.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import { type TestContext, test } from 'node:test'
import { Counter, Histogram, Registry } from 'prom-client'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import { DURATION_BUCKETS, Metrics, UPSTREAM_BUCKETS } from '../src/observability/metrics.js'
import { APPLICATION_ID, MEDIA_ID, type RunningProxy, startEmulator, startProxy, waitFor } from './helpers.js'

const MISSING_ID = '0f0f0f0f-1111-4222-8333-444444444444'
const BIG_ID = '2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6'
/** Fast backoff, the contract's two retries. */
const RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
  .version

/** The contract's metrics: type and label names. */
const CONTRACT: Record<string, { type: string; labels: string[] }> = {
  media_proxy_requests_total: { type: 'counter', labels: ['method', 'route', 'status'] },
  media_proxy_request_duration_seconds: { type: 'histogram', labels: ['method', 'route', 'status'] },
  media_proxy_upstream_latency_seconds: { type: 'histogram', labels: ['host', 'status'] },
  media_proxy_response_bytes_total: { type: 'counter', labels: ['route'] },
  media_proxy_in_flight_requests: { type: 'gauge', labels: [] },
  media_proxy_upstream_retries_total: { type: 'counter', labels: ['reason'] },
  media_proxy_token_refreshes_total: { type: 'counter', labels: ['application', 'result'] },
  media_proxy_token_expiry_timestamp_seconds: { type: 'gauge', labels: ['application'] },
  media_proxy_key_reloads_total: { type: 'counter', labels: ['application', 'result'] },
  media_proxy_applications_loaded: { type: 'gauge', labels: [] },
}

/** A few of prom-client's default metrics, the ones the dashboard relies on. */
const DEFAULT_METRICS: Record<string, string> = {
  process_cpu_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  process_start_time_seconds: 'gauge',
  nodejs_eventloop_lag_p99_seconds: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge',
  nodejs_gc_duration_seconds: 'histogram',
  nodejs_version_info: 'gauge',
}

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

interface Exposition {
  text: string
  types: Map<string, string>
  samples: Sample[]
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) types.set(type[1] as string, type[2] as string)
    if (line === '' || line.startsWith('#')) continue
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(sample, `unparsable exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, name, value] of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[name as string] = value as string
    }
    samples.push({ name: sample[1] as string, labels, value: Number(sample[3]) })
  }
  return { text, types, samples }
}

async function scrape(proxy: RunningProxy): Promise<Exposition> {
  const res = await request(`${proxy.adminUrl}/metrics`)
  assert.equal(res.statusCode, 200)
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
  return parseExposition(await res.body.text())
}

/** Sum of the samples of `name` whose labels include `labels` (0 when there are none yet). */
function sampleValue(expo: Exposition, name: string, labels: Record<string, string> = {}): number {
  return expo.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0)
}

/** Counter and histogram deltas between two scrapes. */
function delta(before: Exposition, after: Exposition, name: string, labels: Record<string, string> = {}): number {
  return sampleValue(after, name, labels) - sampleValue(before, name, labels)
}

async function get(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number; bytes: number }> {
  const res = await request(url, { method })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, bytes: body.length }
}

/** Reads the response until `bytes` arrived, then destroys the connection mid-body. */
function downloadThenAbort(url: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0
    const req = http.get(url, (res) => {
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received >= bytes) {
          req.destroy()
          resolve(received)
        }
      })
    })
    req.on('error', (err) => {
      if (received < bytes) reject(err)
    })
  })
}

async function setUp(t: TestContext): Promise<{ emulator: VonageEmulator; proxy: RunningProxy }> {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 1024)
  emulator.media.addSynthetic(BIG_ID, 1024 * 1024)
  const proxy = await startProxy(t, emulator.url, {}, { retry: RETRY })
  return { emulator, proxy }
}

const OK = { method: 'GET', route: '/media/:id', status: '200' }

test('every contract metric is exposed with its type and label names, plus build info and default metrics', async (t) => {
  const { emulator, proxy } = await setUp(t)
  // One request of each kind, so that every labelled metric has series.
  assert.equal((await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)).status, 200)
  assert.equal((await get(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, 'HEAD')).status, 200)
  assert.equal((await get(`${proxy.mediaUrl}/media/not-a-uuid`)).status, 400)
  assert.equal((await get(`${proxy.mediaUrl}/media/${MISSING_ID}`)).status, 404)
  assert.equal((await get(`${proxy.mediaUrl}/elsewhere/${MEDIA_ID}`)).status, 404)
  emulator.faults.push({ status: 503 })
  assert.equal((await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)).status, 200)

  const expo = await scrape(proxy)
  for (const [name, { type, labels }] of Object.entries(CONTRACT)) {
    assert.equal(expo.types.get(name), type, `${name} should be a ${type}`)
    const series = expo.samples.filter((s) =>
      type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`].includes(s.name) : s.name === name,
    )
    assert.ok(series.length > 0, `${name} has no series`)
    for (const s of series) {
      const names = Object.keys(s.labels)
        .filter((label) => !(s.name.endsWith('_bucket') && label === 'le'))
        .sort()
      assert.deepEqual(names, [...labels].sort(), `labels of ${s.name}`)
    }
  }
  assert.deepEqual(
    expo.samples.filter((s) => s.name === 'media_proxy_build_info'),
    [{ name: 'media_proxy_build_info', labels: { version: VERSION }, value: 1 }],
  )
  assert.equal(expo.types.get('media_proxy_build_info'), 'gauge')
  for (const [name, type] of Object.entries(DEFAULT_METRICS)) assert.equal(expo.types.get(name), type, name)

  // Bounded label values only: route templates, status codes, fixed reasons and results.
  const values = (name: string, label: string) =>
    new Set(expo.samples.filter((s) => s.name.startsWith(name) && label in s.labels).map((s) => s.labels[label]))
  for (const route of values('media_proxy_requests_total', 'route')) {
    assert.ok(['/media/:id', '/v3/media/:id', '/media/*', '/v3/media/*', 'unmatched'].includes(route as string), route)
  }
  for (const status of values('media_proxy_', 'status')) assert.match(status as string, /^\d{3}$/)
  for (const result of values('media_proxy_', 'result')) assert.ok(['success', 'failure'].includes(result as string))
  assert.deepEqual([...values('media_proxy_upstream_retries_total', 'reason')], ['status_503'])

  // The upstream host label holds configured hosts only: here, the emulator's address.
  assert.deepEqual([...values('media_proxy_upstream_latency_seconds', 'host')], [new URL(emulator.url).hostname])

  // No label anywhere holds a media id (any UUID), an address or a port of ours.
  const ports = [proxy.mediaUrl, proxy.adminUrl, emulator.url].map((url) => new URL(url).port)
  for (const s of expo.samples) {
    for (const [label, value] of Object.entries(s.labels)) {
      if (label === 'host' && s.name.startsWith('media_proxy_upstream_latency_seconds')) continue
      // An application id is a UUID, bounded by the applications configured: here, one.
      if (label === 'application') {
        assert.equal(value, APPLICATION_ID, s.name)
        continue
      }
      assert.doesNotMatch(value, /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i, `${s.name}`)
      assert.ok(!value.includes('127.0.0.1') && !value.includes('elsewhere'), `${s.name}{${value}}`)
      for (const port of ports) assert.ok(!value.includes(port), `${s.name}{${value}} holds a port`)
    }
  }
})

test('counters, histograms and gauges move as requests pass', async (t) => {
  const { emulator, proxy } = await setUp(t)
  const url = `${proxy.mediaUrl}/media/${MEDIA_ID}`

  await t.test('token refreshes: the start-up signature is counted and sets the expiry', async () => {
    const expo = await scrape(proxy)
    const token = proxy.app.tokens.peek()
    assert.ok(token)
    assert.ok(sampleValue(expo, 'media_proxy_token_refreshes_total', { result: 'success' }) >= 1)
    assert.equal(sampleValue(expo, 'media_proxy_token_refreshes_total', { result: 'failure' }), 0)
    assert.equal(sampleValue(expo, 'media_proxy_token_expiry_timestamp_seconds'), token.exp)
    assert.equal(sampleValue(expo, 'media_proxy_in_flight_requests'), 0)
  })

  await t.test('success: 200 counted, timed, and its 1024 body bytes added', async () => {
    const before = await scrape(proxy)
    assert.deepEqual(await get(url), { status: 200, bytes: 1024 })
    const after = await scrape(proxy)
    assert.equal(delta(before, after, 'media_proxy_requests_total', OK), 1)
    assert.equal(delta(before, after, 'media_proxy_request_duration_seconds_count', OK), 1)
    assert.ok(delta(before, after, 'media_proxy_request_duration_seconds_sum', OK) > 0)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '200' }), 1)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total', { route: '/media/:id' }), 1024)
    assert.equal(delta(before, after, 'media_proxy_upstream_retries_total'), 0)
  })

  await t.test('HEAD: counted, no body bytes', async () => {
    const before = await scrape(proxy)
    assert.deepEqual(await get(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, 'HEAD'), { status: 200, bytes: 0 })
    const after = await scrape(proxy)
    const labels = { method: 'HEAD', route: '/v3/media/:id', status: '200' }
    assert.equal(delta(before, after, 'media_proxy_requests_total', labels), 1)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total'), 0)
  })

  await t.test('4xx: a bad id is counted as 400 without any upstream request', async () => {
    const upstreamRequests = emulator.requests.length
    const before = await scrape(proxy)
    const res = await get(`${proxy.mediaUrl}/media/not-a-uuid`)
    assert.equal(res.status, 400)
    const after = await scrape(proxy)
    const labels = { method: 'GET', route: '/media/:id', status: '400' }
    assert.equal(delta(before, after, 'media_proxy_requests_total', labels), 1)
    assert.equal(delta(before, after, 'media_proxy_request_duration_seconds_count', labels), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count'), 0)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total', { route: '/media/:id' }), res.bytes)
    assert.equal(emulator.requests.length, upstreamRequests)
  })

  await t.test('4xx: an upstream 404 is counted on both sides', async () => {
    const before = await scrape(proxy)
    const res = await get(`${proxy.mediaUrl}/media/${MISSING_ID}`)
    assert.equal(res.status, 404)
    const after = await scrape(proxy)
    assert.equal(delta(before, after, 'media_proxy_requests_total', { ...OK, status: '404' }), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '404' }), 1)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total', { route: '/media/:id' }), res.bytes)
  })

  await t.test('retried: one upstream 503, then 200, counts one status_503 retry', async () => {
    emulator.faults.push({ status: 503 })
    const before = await scrape(proxy)
    assert.deepEqual(await get(url), { status: 200, bytes: 1024 })
    const after = await scrape(proxy)
    assert.equal(delta(before, after, 'media_proxy_upstream_retries_total', { reason: 'status_503' }), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_retries_total'), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '503' }), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '200' }), 1)
    assert.equal(delta(before, after, 'media_proxy_requests_total', OK), 1)
  })

  await t.test('5xx: three upstream 503s become one 502 after two retries', async () => {
    emulator.faults.push({ status: 503 }, { status: 503 }, { status: 503 })
    const before = await scrape(proxy)
    const res = await get(url)
    assert.equal(res.status, 502)
    const after = await scrape(proxy)
    assert.equal(delta(before, after, 'media_proxy_requests_total', { ...OK, status: '502' }), 1)
    assert.equal(delta(before, after, 'media_proxy_request_duration_seconds_count', { ...OK, status: '502' }), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_retries_total', { reason: 'status_503' }), 2)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '503' }), 3)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total', { route: '/media/:id' }), res.bytes)
  })

  await t.test('aborted: counted once the client goes away, with the bytes really sent', async () => {
    const sent = 64 * 1024
    emulator.faults.push({ stallAfterBytes: sent })
    const before = await scrape(proxy)
    const received = await downloadThenAbort(`${proxy.mediaUrl}/media/${BIG_ID}`, sent)
    assert.equal(received, sent)
    const after = await waitFor(async () => {
      const expo = await scrape(proxy)
      return delta(before, expo, 'media_proxy_requests_total', OK) === 1 ? expo : undefined
    }, 'the aborted request to be counted')
    assert.equal(sampleValue(after, 'media_proxy_in_flight_requests'), 0)
    assert.equal(delta(before, after, 'media_proxy_request_duration_seconds_count', OK), 1)
    assert.equal(delta(before, after, 'media_proxy_response_bytes_total', { route: '/media/:id' }), sent)
  })

  await t.test('in flight: a held download is counted until it ends', async () => {
    emulator.faults.push({ stallAfterBytes: 1024 })
    const held = http.get(`${proxy.mediaUrl}/media/${BIG_ID}`)
    held.on('error', () => undefined)
    await waitFor(async () => sampleValue(await scrape(proxy), 'media_proxy_in_flight_requests') === 1, 'in flight = 1')
    held.destroy()
    await waitFor(async () => sampleValue(await scrape(proxy), 'media_proxy_in_flight_requests') === 0, 'in flight = 0')
  })

  await t.test('token refreshes: a token Vonage refuses is replaced and counted', async () => {
    const jti = emulator.requests.findLast((r) => r.jti)?.jti
    assert.ok(jti)
    emulator.revokedTokenIds.add(jti)
    const before = await scrape(proxy)
    assert.deepEqual(await get(url), { status: 200, bytes: 1024 })
    const after = await scrape(proxy)
    const token = proxy.app.tokens.peek()
    assert.ok(token && token.jti !== jti)
    assert.equal(delta(before, after, 'media_proxy_token_refreshes_total', { result: 'success' }), 1)
    assert.equal(delta(before, after, 'media_proxy_token_refreshes_total', { result: 'failure' }), 0)
    assert.equal(delta(before, after, 'media_proxy_upstream_retries_total', { reason: 'unauthorized' }), 1)
    assert.equal(delta(before, after, 'media_proxy_upstream_latency_seconds_count', { status: '401' }), 1)
    assert.equal(sampleValue(after, 'media_proxy_token_expiry_timestamp_seconds'), token.exp)
    assert.ok(token.exp >= Date.now() / 1000 + 900 - 5)
  })
})

test('promtool check metrics accepts the exposition', async (t) => {
  if (spawnSync('promtool', ['--version']).error) {
    t.skip('promtool not installed (Debian package "prometheus"; .ci/run installs it)')
    return
  }
  const { emulator, proxy } = await setUp(t)
  emulator.faults.push({ status: 503 })
  assert.equal((await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`)).status, 200)
  assert.equal((await get(`${proxy.mediaUrl}/media/not-a-uuid`)).status, 400)
  const { text } = await scrape(proxy)

  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  // 0: clean; 3: lint findings only; anything else (1) means the text did not parse.
  assert.ok(result.status === 0 || result.status === 3, `promtool exit ${result.status}: ${result.stderr}`)
  const findings = `${result.stdout}${result.stderr}`.split('\n').filter((line) => line.trim() !== '')
  for (const finding of findings) {
    // prom-client's own default metrics (nodejs_active_handles_total, a gauge, ...) are not ours to rename.
    assert.match(finding, /^(nodejs|process)_\S+ /, `promtool finding on a proxy metric: ${finding}`)
  }
})

test('the per-request series expose exactly what prom-client would for the same observations', async () => {
  const metrics = new Metrics('0.0.0-test', () => 0, 1)
  const reference = new Registry()
  const duration = new Histogram({
    name: 'media_proxy_request_duration_seconds',
    help: 'Time from request received to response finished (or aborted).',
    labelNames: ['method', 'route', 'status'],
    buckets: DURATION_BUCKETS,
    registers: [reference],
  })
  const upstream = new Histogram({
    name: 'media_proxy_upstream_latency_seconds',
    help: 'Time from request sent upstream to upstream response headers, per upstream response.',
    labelNames: ['host', 'status'],
    buckets: UPSTREAM_BUCKETS,
    registers: [reference],
  })
  const requests = new Counter({
    name: 'media_proxy_requests_total',
    help: 'Requests answered on the media port.',
    labelNames: ['method', 'route', 'status'],
    registers: [reference],
  })
  const bytes = new Counter({
    name: 'media_proxy_response_bytes_total',
    help: 'Body bytes sent to clients.',
    labelNames: ['route'],
    registers: [reference],
  })
  // Bucket edges (a value equal to a bound falls in it), zero, past the last bound, repeats.
  const observations = [0, 0.005, 0.0050001, 0.3, 1, 599.9, 600, 601, 0.3, 12]
  observations.forEach((seconds, i) => {
    const status = i % 3 === 0 ? 404 : 200
    const route = i % 2 === 0 ? '/media/:id' : '/v3/media/:id'
    const sent = status === 200 ? 1000 * i : 0
    metrics.observeRequest({
      requestId: String(i),
      method: 'GET',
      route,
      path: '/media/x',
      status,
      bytes: sent,
      seconds,
      aborted: false,
      remoteAddress: undefined,
      userAgent: undefined,
      media: null,
    })
    metrics.observeUpstream(status, seconds / 2, 'api-us.nexmo.com')
    duration.observe({ method: 'GET', route, status: String(status) }, seconds)
    requests.inc({ method: 'GET', route, status: String(status) })
    bytes.inc({ route }, sent)
    upstream.observe({ host: 'api-us.nexmo.com', status: String(status) }, seconds / 2)
  })

  const family = (text: string, name: string) =>
    text
      .split('\n')
      .filter(
        (line) =>
          line.startsWith(`${name}`) || line.startsWith(`# HELP ${name} `) || line.startsWith(`# TYPE ${name} `),
      )
      .sort()
  const ours = (await metrics.exposition()).body
  const theirs = await reference.metrics()
  for (const name of [
    'media_proxy_request_duration_seconds',
    'media_proxy_upstream_latency_seconds',
    'media_proxy_requests_total',
    'media_proxy_response_bytes_total',
  ]) {
    assert.ok(family(ours, name).length >= 4, `${name}: HELP, TYPE and two series at least`)
    assert.deepEqual(family(ours, name), family(theirs, name), name)
  }
})
