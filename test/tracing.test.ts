// Proves the tracing module against a real OTLP/HTTP receiver: an incoming traceparent is
// continued, attempts are children of their request, signing is traced, events and errors carry
// codes and no secrets, nothing runs when the endpoint is unset, wrong OTEL_* settings stop
// start-up, and a collector that is down or slow never holds a caller up.
import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { ConfigError } from '../src/config.js'
import {
  createTracing,
  NO_TRACING,
  type Tracing,
  type TracingOptions,
  tracingSettings,
} from '../src/observability/tracing.js'
import type { Outcome } from '../src/relay/outcome.js'
import { type ExportedSpan, type OtlpReceiver, SPAN_KIND, startOtlpReceiver } from './otlp-receiver.js'

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN_ID = '00f067aa0ba902b7'
const APPLICATION = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
const MEDIA_PATH = '/v3/media/1b456509-974c-458b-aafa-45fc48a4d976'
const UPSTREAM = { method: 'GET', origin: 'https://api-eu.nexmo.com', host: 'api-eu.nexmo.com', path: MEDIA_PATH }
const DEADLINE_MS = 5_000

function outcome(status: number, bytes: number, extra: Partial<Outcome> = {}): Outcome {
  return {
    requestId: 'req-1',
    method: 'GET',
    route: '/v3/media/:id',
    path: MEDIA_PATH,
    status,
    bytes,
    seconds: 0.01,
    aborted: false,
    remoteAddress: '127.0.0.1',
    userAgent: 'test',
    media: {
      mediaId: '1b456509-974c-458b-aafa-45fc48a4d976',
      upstreamHost: 'api-eu.nexmo.com',
      application: APPLICATION,
      retries: 0,
      upstreamStatus: status,
      upstreamMs: 5,
      cache: 'miss',
      linkExpires: null,
    },
    ...extra,
  }
}

async function receiver(t: TestContext, options?: Parameters<typeof startOtlpReceiver>[0]): Promise<OtlpReceiver> {
  const started = await startOtlpReceiver(options)
  t.after(() => started.close())
  return started
}

function tracingTo(
  t: TestContext,
  collector: OtlpReceiver,
  env: Record<string, string> = {},
  options?: TracingOptions,
): Tracing {
  const settings = tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, ...env })
  assert.ok(settings, 'tracing is on with an endpoint')
  const tracing = createTracing(settings, options)
  t.after(() => tracing.shutdown(100))
  return tracing
}

function byName(spans: readonly ExportedSpan[], name: string): ExportedSpan[] {
  return spans.filter((span) => span.name === name)
}

function only(spans: readonly ExportedSpan[], name: string): ExportedSpan {
  const found = byName(spans, name)
  assert.equal(found.length, 1, `one span named ${name}, in ${spans.map((span) => span.name).join(', ')}`)
  return found[0] as ExportedSpan
}

for (const protocol of ['http/json', 'http/protobuf'] as const) {
  test(`continues the caller's traceparent, with the attempt as a child (${protocol})`, async (t) => {
    const collector = await receiver(t)
    const tracing = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: protocol })
    assert.equal(tracing.enabled, true)

    const request = tracing.startRequest('GET', '/v3/media/:id', MEDIA_PATH, {
      traceparent: `00-${TRACE_ID}-${CALLER_SPAN_ID}-01`,
      tracestate: 'vendor=opaque',
    })
    assert.equal(request.traceId, TRACE_ID)
    assert.equal(request.sampled, true)
    const attempt = request.attempt(UPSTREAM, 0)
    assert.match(attempt.traceparent ?? '', new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`))
    assert.equal(attempt.tracestate, 'vendor=opaque')
    attempt.firstByte()
    attempt.end(200)
    request.end(outcome(200, 1024))
    await tracing.shutdown()

    const spans = await collector.waitForSpans((all) => all.length >= 2, DEADLINE_MS)
    const server = only(spans, 'GET /v3/media/:id')
    assert.equal(server.kind, SPAN_KIND.server)
    assert.equal(server.traceId, TRACE_ID)
    assert.equal(server.parentSpanId, CALLER_SPAN_ID)
    assert.equal(server.spanId, request.spanId)
    assert.equal(server.traceState, 'vendor=opaque')
    assert.deepEqual(server.attributes, {
      'http.request.method': 'GET',
      'http.route': '/v3/media/:id',
      'url.path': MEDIA_PATH,
      'http.response.status_code': 200,
      'http.response.body.size': 1024,
      'media_proxy.application': APPLICATION,
      'media_proxy.upstream.host': 'api-eu.nexmo.com',
      'media_proxy.upstream.retries': 0,
      'media_proxy.cache.result': 'miss',
    })
    assert.equal(server.status.code, 0)
    assert.equal(server.resource['service.name'], 'vonage-media-proxy')
    assert.equal(typeof server.resource['service.version'], 'string')

    const client = only(spans, 'GET')
    assert.equal(client.kind, SPAN_KIND.client)
    assert.equal(client.traceId, TRACE_ID)
    assert.equal(client.parentSpanId, server.spanId)
    assert.equal(attempt.traceparent, `00-${TRACE_ID}-${client.spanId}-01`)
    assert.equal(client.attributes['server.address'], 'api-eu.nexmo.com')
    assert.equal(client.attributes['server.port'], 443)
    assert.equal(client.attributes['url.full'], `https://api-eu.nexmo.com${MEDIA_PATH}`)
    assert.equal(client.attributes['http.response.status_code'], 200)
    assert.equal(typeof client.attributes['media_proxy.upstream.time_to_first_byte_ms'], 'number')
    assert.equal(client.attributes['http.request.resend_count'], undefined)
  })
}

test('without a traceparent (or with a bad one) a request starts its own trace', async (t) => {
  const collector = await receiver(t)
  const tracing = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  const fresh = tracing.startRequest('GET', '/media/:id', MEDIA_PATH, {})
  const bad = tracing.startRequest('GET', '/media/:id', MEDIA_PATH, {
    traceparent: `00-${'0'.repeat(32)}-${CALLER_SPAN_ID}-01`,
  })
  fresh.end(outcome(200, 1))
  bad.end(outcome(200, 1))
  await tracing.shutdown()
  const spans = await collector.waitForSpans((all) => all.length >= 2, DEADLINE_MS)
  for (const span of spans) {
    assert.equal(span.parentSpanId, undefined)
    assert.match(span.traceId, /^[0-9a-f]{32}$/)
  }
  assert.notEqual(spans[0]?.traceId, spans[1]?.traceId)
})

test('a retried exchange: one CLIENT span per attempt, the retry reason on the one retried', async (t) => {
  const collector = await receiver(t)
  const tracing = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  const request = tracing.startRequest('GET', '/v3/media/:id', MEDIA_PATH, {})
  const refused = request.attempt(UPSTREAM, 0)
  refused.end(null, 'connect_error', 'ECONNREFUSED')
  const unavailable = request.attempt(UPSTREAM, 1)
  unavailable.firstByte()
  unavailable.end(503, 'status_503')
  const relayed = request.attempt(UPSTREAM, 2)
  relayed.firstByte()
  relayed.end(200)
  request.end(outcome(200, 10, { media: { ...(outcome(200, 10).media as NonNullable<Outcome['media']>), retries: 2 } }))
  await tracing.shutdown()

  const spans = await collector.waitForSpans((all) => all.length >= 4, DEADLINE_MS)
  const server = only(spans, 'GET /v3/media/:id')
  assert.equal(server.attributes['media_proxy.upstream.retries'], 2)
  const attempts = byName(spans, 'GET')
  assert.equal(attempts.length, 3)
  for (const attempt of attempts) assert.equal(attempt.parentSpanId, server.spanId)
  const [first, second, third] = [0, 1, 2].map((count) =>
    attempts.find((span) => (span.attributes['http.request.resend_count'] ?? 0) === count),
  )
  assert.equal(first?.attributes['media_proxy.retry.reason'], 'connect_error')
  assert.equal(first?.attributes['error.type'], 'ECONNREFUSED')
  assert.equal(first?.attributes['http.response.status_code'], undefined)
  assert.equal(first?.status.code, 2)
  assert.equal(second?.attributes['media_proxy.retry.reason'], 'status_503')
  assert.equal(second?.attributes['http.response.status_code'], 503)
  assert.equal(second?.attributes['error.type'], '503')
  assert.equal(third?.attributes['media_proxy.retry.reason'], undefined)
  assert.equal(third?.status.code, 0)
})

test('a client abort and a cut response are events; a 5xx marks the server span as an error', async (t) => {
  const collector = await receiver(t)
  const tracing = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  const aborted = tracing.startRequest('GET', '/v3/media/:id', MEDIA_PATH, {})
  aborted.event('client_aborted', { bytes: 4096 })
  aborted.end(outcome(200, 4096, { aborted: true }))
  const cut = tracing.startRequest('HEAD', '/v1/files/:id', MEDIA_PATH, {})
  cut.event('response_cut', { bytes: 100, errorType: 'UND_ERR_SOCKET' })
  cut.end(outcome(200, 100, { aborted: true }))
  const failed = tracing.startRequest('GET', '/media/:id', MEDIA_PATH, {})
  failed.setAttributes({ errorType: 'upstream-timeout' })
  failed.end(outcome(504, 0))
  await tracing.shutdown()

  const spans = await collector.waitForSpans((all) => all.length >= 3, DEADLINE_MS)
  const abortedSpan = only(spans, 'GET /v3/media/:id')
  assert.deepEqual(abortedSpan.events, [
    { name: 'media_proxy.client_aborted', attributes: { 'http.response.body.size': 4096 } },
  ])
  assert.equal(abortedSpan.attributes['media_proxy.aborted'], true)
  assert.equal(abortedSpan.status.code, 0)
  assert.deepEqual(only(spans, 'HEAD /v1/files/:id').events, [
    {
      name: 'media_proxy.response_cut',
      attributes: { 'http.response.body.size': 100, 'error.type': 'UND_ERR_SOCKET' },
    },
  ])
  const failedSpan = only(spans, 'GET /media/:id')
  assert.equal(failedSpan.status.code, 2)
  assert.equal(failedSpan.attributes['error.type'], 'upstream-timeout')
})

test('a token signing is a span of its own; a failure is recorded by its code, never its message', async (t) => {
  const collector = await receiver(t)
  const tracing = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  tracing.signing(APPLICATION).end()
  const secret = '-----BEGIN PRIVATE KEY----- MIIEvQIBADANBg'
  tracing.signing(APPLICATION).end(Object.assign(new Error(`cannot sign with ${secret}`), { code: 'ERR_JWS_INVALID' }))
  tracing.signing(APPLICATION).end(new TypeError(secret))
  await tracing.shutdown()

  const spans = await collector.waitForSpans((all) => all.length >= 3, DEADLINE_MS)
  const signings = byName(spans, 'sign application token')
  assert.equal(signings.length, 3)
  for (const span of signings) {
    assert.equal(span.kind, SPAN_KIND.internal)
    assert.equal(span.parentSpanId, undefined)
    assert.equal(span.attributes['media_proxy.application'], APPLICATION)
  }
  assert.deepEqual(signings.map((span) => span.attributes['error.type'] ?? null).sort(), [
    'ERR_JWS_INVALID',
    'TypeError',
    null,
  ])
  for (const body of collector.bodies) assert.ok(!body.toString('latin1').includes('PRIVATE KEY'))
})

test('the sampler: always_off exports nothing, and a parent that is not sampled is followed', async (t) => {
  const collector = await receiver(t)
  const off = tracingTo(t, collector, { OTEL_TRACES_SAMPLER: 'always_off', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  const dropped = off.startRequest('GET', '/media/:id', MEDIA_PATH, {})
  assert.equal(dropped.sampled, false)
  assert.match(dropped.traceId ?? '', /^[0-9a-f]{32}$/, 'an unsampled request still has a trace id for the log')
  dropped.attempt(UPSTREAM, 0).end(200)
  dropped.end(outcome(200, 1))
  await off.shutdown()

  const on = tracingTo(t, collector, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  const notSampled = on.startRequest('GET', '/media/:id', MEDIA_PATH, {
    traceparent: `00-${TRACE_ID}-${CALLER_SPAN_ID}-00`,
  })
  assert.equal(notSampled.sampled, false)
  assert.equal(notSampled.traceId, TRACE_ID)
  const attempt = notSampled.attempt(UPSTREAM, 0)
  assert.match(attempt.traceparent ?? '', new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`))
  attempt.end(200)
  notSampled.end(outcome(200, 1))
  const sampled = on.startRequest('GET', '/media/:id', MEDIA_PATH, {})
  sampled.end(outcome(200, 1))
  await on.shutdown()

  const spans = await collector.waitForSpans((all) => all.length >= 1, DEADLINE_MS)
  assert.deepEqual(
    spans.map((span) => span.traceId),
    [sampled.traceId],
  )
})

test('spans go out on the batch schedule, without a shutdown', async (t) => {
  const collector = await receiver(t)
  const tracing = tracingTo(t, collector, { OTEL_BSP_SCHEDULE_DELAY: '20', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })
  tracing.startRequest('GET', '/media/:id', MEDIA_PATH, {}).end(outcome(200, 1))
  await collector.waitForSpans((all) => all.length === 1, DEADLINE_MS)
})

test('off without an endpoint (or when disabled): the same frozen no-op objects every time', () => {
  assert.equal(tracingSettings({}), undefined)
  assert.equal(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: '  ' }), undefined)
  assert.equal(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'TRUE' }), undefined)
  assert.equal(
    tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }),
    undefined,
  )

  const tracing = createTracing(tracingSettings({}))
  assert.equal(tracing, NO_TRACING)
  assert.equal(tracing.enabled, false)
  const request = tracing.startRequest('GET', '/media/:id', MEDIA_PATH, {
    traceparent: `00-${TRACE_ID}-${CALLER_SPAN_ID}-01`,
  })
  assert.equal(request, tracing.startRequest('HEAD', '/v1/files/:id', '/other', {}))
  assert.equal(request.traceId, undefined)
  assert.equal(request.sampled, false)
  const attempt = request.attempt(UPSTREAM, 0)
  assert.equal(attempt, request.attempt(UPSTREAM, 1))
  assert.equal(attempt.traceparent, undefined)
  assert.equal(tracing.signing(APPLICATION), tracing.signing(APPLICATION))
  assert.ok(Object.isFrozen(request) && Object.isFrozen(attempt) && Object.isFrozen(tracing))
  attempt.firstByte()
  attempt.end(200)
  request.event('client_aborted')
  request.end(outcome(200, 1))
})

test('settings: the traces URL as the SDK builds it, and the defaults', () => {
  const base = tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })
  assert.deepEqual(base, {
    url: 'http://collector:4318/v1/traces',
    protocol: 'http/protobuf',
    sampler: 'parentbased_always_on',
    samplerRatio: 1,
    exportTimeoutMs: undefined,
    batch: {
      scheduledDelayMillis: undefined,
      exportTimeoutMillis: undefined,
      maxQueueSize: undefined,
      maxExportBatchSize: undefined,
    },
  })
  assert.equal(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c/otlp/' })?.url, 'https://c/otlp/v1/traces')
  const specific = tracingSettings({
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ignored:4318',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c/custom/traces',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'HTTP/JSON',
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: '0.25',
    OTEL_EXPORTER_OTLP_TIMEOUT: '1500',
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '2000',
    OTEL_BSP_MAX_QUEUE_SIZE: '100',
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '50',
  })
  assert.equal(specific?.url, 'https://c/custom/traces')
  assert.equal(specific?.protocol, 'http/json')
  assert.equal(specific?.sampler, 'parentbased_traceidratio')
  assert.equal(specific?.samplerRatio, 0.25)
  assert.equal(specific?.exportTimeoutMs, 2000)
  assert.equal(specific?.batch.maxExportBatchSize, 50)
  // The traces endpoint alone turns tracing on too.
  assert.equal(
    tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' })?.url,
    'http://c:4318/v1/traces',
  )
})

test('settings: a wrong one is a ConfigError naming it, without echoing its value', () => {
  const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }
  const cases: Array<[Record<string, string>, string]> = [
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318 secret-token' }, 'OTEL_EXPORTER_OTLP_ENDPOINT'],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://collector' }, 'OTEL_EXPORTER_OTLP_ENDPOINT'],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'not a url' }, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'],
    [{ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 'OTEL_EXPORTER_OTLP_PROTOCOL'],
    [{ ...endpoint, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/xml' }, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'],
    [{ ...endpoint, OTEL_TRACES_SAMPLER: 'jaeger_remote' }, 'OTEL_TRACES_SAMPLER'],
    [{ ...endpoint, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' }, 'OTEL_TRACES_SAMPLER_ARG'],
    [{ ...endpoint, OTEL_TRACES_SAMPLER_ARG: 'half' }, 'OTEL_TRACES_SAMPLER_ARG'],
    [{ ...endpoint, OTEL_BSP_SCHEDULE_DELAY: '-1' }, 'OTEL_BSP_SCHEDULE_DELAY'],
    [{ ...endpoint, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4096' }, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE'],
    [{ ...endpoint, OTEL_EXPORTER_OTLP_TIMEOUT: '1.5' }, 'OTEL_EXPORTER_OTLP_TIMEOUT'],
    [{ ...endpoint, OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER'],
    [{ ...endpoint, OTEL_SDK_DISABLED: 'yes' }, 'OTEL_SDK_DISABLED'],
  ]
  for (const [env, setting] of cases) {
    assert.throws(
      () => tracingSettings(env),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `${setting}: ${String(err)}`)
        assert.equal(err.setting, setting)
        assert.ok(!err.message.includes('secret-token'))
        return true
      },
    )
  }
})

test('collector down: calls return at once, failures are reported, shutdown keeps its bound', async (t) => {
  const collector = await receiver(t, { down: true })
  const failure = Promise.withResolvers<Error>()
  const tracing = tracingTo(
    t,
    collector,
    // A batch of 2 makes span.end() start an export itself, inside the loop below.
    { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2', OTEL_EXPORTER_OTLP_TIMEOUT: '500' },
    { onExportFailure: failure.resolve },
  )
  const started = performance.now()
  for (let i = 0; i < 200; i++) serveOne(tracing)
  const elapsed = performance.now() - started
  assert.ok(elapsed < 1_000, `200 traced requests took ${elapsed.toFixed(0)} ms`)

  const error = await withDeadline(failure.promise, DEADLINE_MS, 'an export failure reported')
  assert.ok(error instanceof Error)
  await assertShutdownWithin(tracing, 300)
})

test('collector slow: calls return at once and shutdown keeps its bound while an export hangs', async (t) => {
  const collector = await receiver(t, { delayMs: 30_000 })
  const tracing = tracingTo(t, collector, {
    // The 200th request's end() fills a batch and starts its export.
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '400',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_TIMEOUT: '1500',
  })
  const started = performance.now()
  for (let i = 0; i < 200; i++) serveOne(tracing)
  // The collector has them but does not answer: that export hangs, and requests go on.
  await collector.waitForSpans((all) => all.length === 400, DEADLINE_MS)
  for (let i = 0; i < 10; i++) serveOne(tracing)
  const elapsed = performance.now() - started
  assert.ok(elapsed < 1_000, `210 traced requests took ${elapsed.toFixed(0)} ms`)

  // The last 20 spans' export hangs too; shutdown gives up on it at its bound.
  const shutdownMs = await assertShutdownWithin(tracing, 300)
  assert.ok(shutdownMs >= 250, `shutdown took ${shutdownMs.toFixed(0)} ms: it did not wait for the export`)
  assert.equal(collector.requests, 2)
})

/** One request's worth of tracing calls, as the relay makes them. */
function serveOne(tracing: Tracing): void {
  const request = tracing.startRequest('GET', '/v3/media/:id', MEDIA_PATH, {})
  const attempt = request.attempt(UPSTREAM, 0)
  attempt.firstByte()
  attempt.end(200)
  request.end(outcome(200, 1024))
}

/** Shuts down, checks that it took no longer than its bound, and says how long it took. */
async function assertShutdownWithin(tracing: Tracing, boundMs: number): Promise<number> {
  const started = performance.now()
  await tracing.shutdown(boundMs)
  const elapsed = performance.now() - started
  // Timers fire late on a busy machine; the export's own timeout (seconds) is far beyond this.
  assert.ok(elapsed < boundMs + 700, `shutdown took ${elapsed.toFixed(0)} ms, bound ${boundMs} ms`)
  return elapsed
}

async function withDeadline<T>(promise: Promise<T>, deadlineMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${deadlineMs} ms: ${what}`)), deadlineMs)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}
