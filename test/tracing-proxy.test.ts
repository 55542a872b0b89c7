// Tracing through the proxy (OTEL_EXPORTER_OTLP_ENDPOINT), against a small OTLP/HTTP receiver:
// a request's server span continues the caller's traceparent, each upstream attempt is a child
// of it (two on a retried request), token signing has its span, the access line carries the
// trace id, the duration histogram carries exemplars for OpenMetrics scrapes, nothing secret is
// exported, traceparent goes to Vonage only when asked, and a down or slow collector never
// holds a download up.
import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { APPLICATION_ID, keys, MEDIA_ID, startEmulator, startProxy } from './helpers.js'
import { type OtlpReceiverOptions, SPAN_KIND, startOtlpReceiver } from './otlp-receiver.js'

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const TRACEPARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
const CLIENT_KEY = 'client-key-0123456789abcdef'

async function setup(t: TestContext, receiverOptions: OtlpReceiverOptions = {}, env: Record<string, string> = {}) {
  const receiver = await startOtlpReceiver(receiverOptions)
  t.after(() => receiver.close())
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 20_000)
  const proxy = await startProxy(
    t,
    emulator.url,
    {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '50',
      INBOUND_API_KEYS: CLIENT_KEY,
      ...env,
    },
    { retry: { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 } },
  )
  return { receiver, emulator, proxy }
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers: { authorization: `Bearer ${CLIENT_KEY}`, ...headers } })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

test('a request with a traceparent yields a server span in that trace, an attempt span under it, and the access line has the trace id', async (t) => {
  const { receiver, emulator, proxy } = await setup(t)
  const response = await get(`${proxy.mediaUrl}/v3/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
  assert.equal(response.status, 200)
  const spans = await receiver.waitForSpans(
    (all) => all.some((span) => span.kind === SPAN_KIND.server && span.traceId === CALLER_TRACE),
    5_000,
  )
  const server = spans.find((span) => span.kind === SPAN_KIND.server && span.traceId === CALLER_TRACE)
  assert.ok(server)
  assert.equal(server.parentSpanId, CALLER_SPAN)
  assert.equal(server.attributes['http.request.method'], 'GET')
  assert.equal(server.attributes['http.route'], '/v3/media/:id')
  assert.equal(server.attributes['http.response.status_code'], 200)
  assert.equal(server.attributes['http.response.body.size'], 20_000)
  assert.equal(server.attributes['media_proxy.application'], APPLICATION_ID)
  const attempts = spans.filter((span) => span.kind === SPAN_KIND.client && span.parentSpanId === server.spanId)
  assert.equal(attempts.length, 1)
  assert.equal(attempts[0]?.traceId, CALLER_TRACE)
  // The default application's token was signed at start-up: a span of its own.
  assert.ok(spans.some((span) => /sign/i.test(span.name)))

  const line = proxy.logs.find((entry) => entry.msg === 'request completed')
  assert.equal(line?.traceId, CALLER_TRACE)
  // Off by default: the trace stops at the proxy.
  assert.equal(emulator.requests.at(-1)?.headers.traceparent, undefined)
})

test('a retried request has one attempt span per attempt, the first marked with its retry reason', async (t) => {
  const { receiver, emulator, proxy } = await setup(t)
  emulator.faults.push({ status: 503 })
  const response = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
  assert.equal(response.status, 200)
  const spans = await receiver.waitForSpans(
    (all) => all.filter((span) => span.kind === SPAN_KIND.client && span.traceId === CALLER_TRACE).length >= 2,
    5_000,
  )
  const server = spans.find((span) => span.kind === SPAN_KIND.server && span.traceId === CALLER_TRACE)
  const attempts = spans.filter((span) => span.kind === SPAN_KIND.client && span.parentSpanId === server?.spanId)
  assert.equal(attempts.length, 2)
  const statuses = attempts.map((span) => span.attributes['http.response.status_code']).sort()
  assert.deepEqual(statuses, [200, 503])
  const retried = attempts.find((span) => span.attributes['http.response.status_code'] === 503)
  assert.ok(retried?.attributes['media_proxy.retry.reason'])
  assert.equal(server?.attributes['media_proxy.upstream.retries'], 1)
})

test('nothing secret is exported: no token, key, client key or link signature in any span', async (t) => {
  const signingKey = 'link-signing-key-0123456789abcdef0123'
  const { receiver, emulator, proxy } = await setup(t, {}, { LINK_SIGNING_KEYS: signingKey })
  await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
  const created = await request(`${proxy.mediaUrl}/links`, {
    method: 'POST',
    headers: { authorization: `Bearer ${CLIENT_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ path: `/media/${MEDIA_ID}` }),
  })
  const { url } = (await created.body.json()) as { url: string }
  const signature = new URL(url).searchParams.get('signature') as string
  const proxied = new URL(url)
  await get(`${proxy.mediaUrl}${proxied.pathname}${proxied.search}`)
  await receiver.waitForSpans((all) => all.filter((span) => span.kind === SPAN_KIND.server).length >= 3, 5_000)
  const exported = Buffer.concat(receiver.bodies).toString('utf8')
  const token = emulator.requests[0]?.headers.authorization?.replace(/^Bearer /, '') as string
  assert.ok(token.length > 100)
  for (const secret of [token, token.split('.')[2] as string, CLIENT_KEY, signature, signingKey]) {
    assert.ok(!exported.includes(secret), 'a secret reached the collector')
  }
  assert.ok(!exported.includes('PRIVATE KEY'))
  assert.ok(!exported.includes(keys.pkcs8.split('\n')[1] as string))
})

test('UPSTREAM_TRACE_PROPAGATION=true sends each attempt its traceparent, in the caller trace', async (t) => {
  const { receiver, emulator, proxy } = await setup(t, {}, { UPSTREAM_TRACE_PROPAGATION: 'true' })
  await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
  const sent = emulator.requests.at(-1)?.headers.traceparent as string
  assert.match(sent, new RegExp(`^00-${CALLER_TRACE}-[0-9a-f]{16}-01$`))
  const spans = await receiver.waitForSpans(
    (all) => all.some((span) => span.kind === SPAN_KIND.client && span.traceId === CALLER_TRACE),
    5_000,
  )
  const attempt = spans.find((span) => span.kind === SPAN_KIND.client && span.traceId === CALLER_TRACE)
  assert.equal(sent.split('-')[2], attempt?.spanId, 'Vonage sees the attempt span as its parent')
})

test('an OpenMetrics scrape gets the trace id as an exemplar on the duration histogram; a plain scrape is unchanged', async (t) => {
  const { proxy } = await setup(t)
  await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
  const open = await request(`${proxy.adminUrl}/metrics`, {
    headers: { accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' },
  })
  assert.match(String(open.headers['content-type']), /application\/openmetrics-text/)
  const body = await open.body.text()
  assert.match(
    body,
    new RegExp(
      `media_proxy_request_duration_seconds_bucket\\{[^}]*\\} 1 # \\{trace_id="${CALLER_TRACE}",span_id="[0-9a-f]{16}"\\}`,
    ),
  )
  assert.match(body, /# EOF\n$/)
  const plain = await request(`${proxy.adminUrl}/metrics`)
  const text = await plain.body.text()
  assert.match(String(plain.headers['content-type']), /text\/plain/)
  assert.ok(!text.includes('trace_id'))
  assert.match(text, /^media_proxy_requests_total\{/m, 'counters keep their _total in the text format')
})

test('a collector that is down or slow never holds a download up', async (t) => {
  for (const options of [{ down: true }, { delayMs: 10_000 }]) {
    const { proxy } = await setup(t, options, { OTEL_BSP_SCHEDULE_DELAY: '1' })
    const started = performance.now()
    for (let i = 0; i < 30; i++) {
      const response = await get(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { traceparent: TRACEPARENT })
      assert.equal(response.status, 200)
      assert.equal(response.body.length, 20_000)
    }
    // 30 small downloads over loopback: well under a second each way, collector or not.
    assert.ok(performance.now() - started < 5_000, `took ${performance.now() - started} ms`)
    const closing = performance.now()
    await proxy.app.close(0)
    assert.ok(performance.now() - closing < 4_000, 'shutdown waits for the collector a bounded time')
  }
})

test('tracing off: no traceId in the access line and no exemplars', async (t) => {
  const emulator = await startEmulator(t)
  emulator.media.addSynthetic(MEDIA_ID, 100)
  const proxy = await startProxy(t, emulator.url)
  await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`, { headers: { traceparent: TRACEPARENT } }).then((r) =>
    r.body.arrayBuffer(),
  )
  const line = proxy.logs.find((entry) => entry.msg === 'request completed')
  assert.equal(line?.traceId, undefined)
  const open = await request(`${proxy.adminUrl}/metrics`, { headers: { accept: 'application/openmetrics-text' } })
  assert.match(String(open.headers['content-type']), /text\/plain/)
  await open.body.text()
})
