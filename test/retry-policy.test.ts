// Proves the retry and 401 policy as a pure decision, without a socket: every status and error
// code the relay can meet, at every point of an exchange's history.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DEFAULT_RETRY_POLICY, type Decision, decide, type ExchangeHistory } from '../src/relay/retry-policy.js'

const FRESH: ExchangeHistory = { retries: 0, refreshed: false }
const half = () => 0.5

function summary(decision: Decision): string {
  switch (decision.action) {
    case 'relay':
    case 'refresh':
      return decision.action
    case 'retry':
      return `retry ${decision.reason}`
    case 'fail':
      return `fail ${decision.problem.status} ${decision.problem.code}`
  }
}

test('every final status but 401 and 502/503/504 is relayed as it is', () => {
  for (let status = 200; status <= 599; status++) {
    if ([401, 502, 503, 504].includes(status)) continue
    assert.equal(summary(decide({ status }, FRESH, DEFAULT_RETRY_POLICY)), 'relay', String(status))
  }
})

test('a status above 599 is a broken upstream: 502', () => {
  for (const status of [600, 999]) {
    assert.equal(summary(decide({ status }, FRESH, DEFAULT_RETRY_POLICY)), 'fail 502 upstream-unavailable')
  }
})

test('502/503/504 are retried twice with full-jitter backoff, then 502', () => {
  for (const status of [502, 503, 504]) {
    const delays = [0, 1].map((retries) => {
      const decision = decide({ status }, { retries, refreshed: false }, DEFAULT_RETRY_POLICY, half)
      assert.equal(summary(decision), `retry status_${status}`)
      return decision.action === 'retry' ? decision.delayMs : Number.NaN
    })
    // Half of a ceiling that doubles from 100 ms: 50 ms, then 100 ms.
    assert.deepEqual(delays, [50, 100])
    const last = decide({ status }, { retries: 2, refreshed: true }, DEFAULT_RETRY_POLICY)
    assert.equal(summary(last), 'fail 502 upstream-unavailable')
  }
})

test('the backoff ceiling stops at maxDelayMs, and the jitter spans [0, ceiling)', () => {
  const policy = { maxRetries: 10, baseDelayMs: 100, maxDelayMs: 1_000 }
  const at = (retries: number, random: number) => {
    const decision = decide({ status: 503 }, { retries, refreshed: false }, policy, () => random)
    return decision.action === 'retry' ? decision.delayMs : Number.NaN
  }
  assert.equal(at(3, 0.999), 799.2)
  assert.equal(at(4, 0.5), 500)
  assert.equal(at(9, 0.5), 500)
  assert.equal(at(5, 0), 0)
})

test('a 401 gets one fresh token; a second 401 is 502, and the refresh spends no other retry', () => {
  assert.equal(summary(decide({ status: 401 }, FRESH, DEFAULT_RETRY_POLICY)), 'refresh')
  assert.equal(summary(decide({ status: 401 }, { retries: 2, refreshed: false }, DEFAULT_RETRY_POLICY)), 'refresh')
  assert.equal(
    summary(decide({ status: 401 }, { retries: 0, refreshed: true }, DEFAULT_RETRY_POLICY)),
    'fail 502 upstream-unauthorized',
  )
  assert.equal(
    summary(decide({ status: 503 }, { retries: 0, refreshed: true }, DEFAULT_RETRY_POLICY, half)),
    'retry status_503',
  )
})

test('connection failures before headers are retried by kind; others fail at once', () => {
  const expected: Record<string, string> = {
    ECONNREFUSED: 'retry connect_error',
    UND_ERR_CONNECT_TIMEOUT: 'retry connect_error',
    EAI_AGAIN: 'retry connect_error',
    ECONNRESET: 'retry reset',
    EPIPE: 'retry reset',
    UND_ERR_SOCKET: 'retry reset',
    UND_ERR_HEADERS_TIMEOUT: 'fail 504 upstream-timeout',
    ENOTFOUND: 'fail 502 upstream-unavailable',
    DEPTH_ZERO_SELF_SIGNED_CERT: 'fail 502 upstream-unavailable',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'fail 502 upstream-unavailable',
    UND_ERR_INFO: 'fail 502 upstream-unavailable',
    '': 'fail 502 upstream-unavailable',
  }
  for (const [errorCode, outcome] of Object.entries(expected)) {
    assert.equal(summary(decide({ errorCode }, FRESH, DEFAULT_RETRY_POLICY)), outcome, errorCode)
  }
  assert.equal(
    summary(decide({ errorCode: 'ECONNRESET' }, { retries: 2, refreshed: false }, DEFAULT_RETRY_POLICY)),
    'fail 502 upstream-unavailable',
  )
})

test('a failure keeps the error that caused it, for the log', () => {
  const cause = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })
  const decision = decide({ errorCode: cause.code, cause }, FRESH, DEFAULT_RETRY_POLICY)
  assert.equal(decision.action === 'fail' ? decision.problem.cause : undefined, cause)
})
