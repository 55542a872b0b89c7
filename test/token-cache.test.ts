// The token cache under a controlled clock: one signature serves many requests, refresh is in the background at 2/3, no token below the 1/4 floor, fail closed.
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { test } from 'node:test'
import type { Counter } from 'prom-client'
import { request } from 'undici'
import { type Clock, type RefreshResult, type Token, TokenCache, TokenSigner } from '../src/credentials/token-cache.js'
import { ProxyError } from '../src/errors.js'
import {
  APPLICATION_ID,
  concurrentStatuses,
  keys,
  MEDIA_ID,
  type RunningProxy,
  startEmulator,
  startProxy,
  waitFor,
} from './helpers.js'

const TTL_SECONDS = 30
const TTL_MS = TTL_SECONDS * 1000
const REFRESH_AFTER_MS = (TTL_MS * 2) / 3
const FLOOR_SECONDS = TTL_SECONDS / 4
/** A whole second, so that iat (rounded down) is exactly the start. */
const T0 = 1_800_000_000_000

/** Time that moves only when the test says so; waiters wake when their moment comes. */
class ManualClock implements Clock {
  #ms: number
  #waiters: { at: number; wake: () => void }[] = []
  constructor(startMs: number) {
    this.#ms = startMs
  }
  now(): number {
    return this.#ms
  }
  get seconds(): number {
    return this.#ms / 1000
  }
  advance(ms: number): void {
    this.#ms += ms
    const due = this.#waiters.filter((waiter) => waiter.at <= this.#ms)
    this.#waiters = this.#waiters.filter((waiter) => waiter.at > this.#ms)
    for (const waiter of due) waiter.wake()
  }
  until(at: number): Promise<void> {
    if (at <= this.#ms) return Promise.resolve()
    return new Promise((wake) => this.#waiters.push({ at, wake }))
  }
}

type SignerMode = 'ok' | 'fail' | 'fail-after-first' | 'fail-every-other'

/** The real signer, counted, and made slow (in clock time) or failing on demand. */
class ScriptedSigner extends TokenSigner {
  attempts = 0
  /** Signatures whose crypto is running now (real time, not clock time). */
  working = 0
  readonly tokens: Token[] = []
  mode: SignerMode = 'ok'
  /** Clock milliseconds between the signature's iat and its delivery. */
  durationMs = 0
  /** While set, every signature waits for it before delivering. */
  hold: Promise<void> | undefined
  readonly #clock: ManualClock

  constructor(clock: ManualClock) {
    super(keys.privateKey, APPLICATION_ID, TTL_SECONDS, clock)
    this.#clock = clock
  }

  override async sign(): Promise<Token> {
    const attempt = ++this.attempts
    const startedAt = this.#clock.now()
    const fails =
      this.mode === 'fail' ||
      (this.mode === 'fail-after-first' && attempt > 1) ||
      (this.mode === 'fail-every-other' && attempt % 2 === 0)
    let token: Token
    this.working++
    try {
      if (fails) throw new Error('signing key unusable')
      token = await super.sign()
    } finally {
      this.working--
    }
    await this.#clock.until(startedAt + this.durationMs)
    await this.hold
    this.tokens.push(token)
    return token
  }
}

function setup(options: { onRefresh?: (result: RefreshResult) => void } = {}) {
  const clock = new ManualClock(T0)
  const signer = new ScriptedSigner(clock)
  const onRefresh = options.onRefresh
  const cache = new TokenCache(signer, {
    ttlSeconds: TTL_SECONDS,
    clock,
    proactive: false,
    onRefresh: onRefresh && ((_application, result) => onRefresh(result)),
  })
  return { clock, signer, cache }
}

/** Lets every signature whose crypto is running finish, and every promise chain settle. */
async function settle(signer: ScriptedSigner): Promise<void> {
  await waitFor(() => signer.working === 0, 'signatures in progress to finish')
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve))
}

function assertAboveFloor(token: Token, nowSeconds: number, context: string): void {
  assert.ok(
    token.exp - nowSeconds >= FLOOR_SECONDS,
    `${context}: handed out a token with ${token.exp - nowSeconds} s left (floor ${FLOOR_SECONDS} s)`,
  )
  assert.ok(token.iat <= nowSeconds, `${context}: iat in the future`)
}

function assertTokenUnavailable(error: unknown): true {
  assert.ok(error instanceof ProxyError, `a ProxyError, got ${String(error)}`)
  assert.equal(error.status, 503)
  assert.equal(error.code, 'token-unavailable')
  return true
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {}
  const promise = new Promise<void>((done) => {
    resolve = done
  })
  return { promise, resolve }
}

test('one token serves every request until two thirds of its lifetime', async () => {
  const { clock, signer, cache } = setup()
  const first = await cache.get()
  for (let elapsed = 0; elapsed < REFRESH_AFTER_MS; elapsed += 100) {
    const token = await cache.get()
    assert.equal(token.jti, first.jti, `same token at +${elapsed} ms`)
    clock.advance(100)
  }
  const many = await Promise.all(Array.from({ length: 100 }, () => cache.get()))
  assert.ok(many.every((token) => token.jti === first.jti))
  assert.equal(signer.attempts, 1, 'one signature for all of them')
})

test('after two thirds of the lifetime, get() answers at once and one refresh signs in the background', async () => {
  const { clock, signer, cache } = setup()
  const first = await cache.get()
  assert.equal(first.iat, T0 / 1000)
  assert.equal(first.exp, T0 / 1000 + TTL_SECONDS)

  const gate = deferred()
  signer.hold = gate.promise
  clock.advance(REFRESH_AFTER_MS + 1)
  // The refresh is held, so a get() that waited for it would never answer.
  const answers: Token[] = []
  for (let i = 0; i < 20; i++) void cache.get().then((token) => answers.push(token))
  await waitFor(() => answers.length === 20, 'get() to answer while the refresh is held')
  assert.ok(
    answers.every((token) => token.jti === first.jti),
    'the current token is handed out meanwhile',
  )
  await settle(signer)
  assert.equal(signer.attempts, 2, 'exactly one background refresh, however many requests')
  assert.equal(cache.peek()?.jti, first.jti)

  signer.hold = undefined
  gate.resolve()
  const second = await waitFor(() => {
    const token = cache.peek()
    return token && token.jti !== first.jti ? token : undefined
  }, 'the refreshed token to be cached')
  assert.equal(second.iat, Math.floor(clock.seconds))
  assert.equal(second.exp - second.iat, TTL_SECONDS)
  assert.equal((await cache.get()).jti, second.jti)
  assert.equal(signer.attempts, 2)
})

test('current() hands out the cached token while fresh, synchronously, and never signs', async () => {
  const { clock, signer, cache } = setup()
  assert.equal(cache.current(), undefined, 'nothing cached yet')
  assert.equal(signer.attempts, 0, 'current() does not sign')
  const first = await cache.get()
  assert.equal(cache.current()?.jti, first.jti)
  clock.advance(REFRESH_AFTER_MS - 1)
  assert.equal(cache.current()?.jti, first.jti, 'fresh until two thirds of its lifetime')
  clock.advance(2)
  assert.equal(cache.current(), undefined, 'stale: get() decides (and refreshes)')
  assert.equal(signer.attempts, 1)
  const second = await waitFor(async () => {
    const token = await cache.get()
    return token.jti !== first.jti ? token : undefined
  }, 'the refresh')
  assert.equal(cache.current()?.jti, second.jti)
  cache.invalidate(second)
  assert.equal(cache.current(), undefined, 'nothing after invalidate()')
})

test('100 concurrent cold get() calls cause exactly one signature', async () => {
  const { signer, cache } = setup()
  const tokens = await Promise.all(Array.from({ length: 100 }, () => cache.get()))
  assert.equal(signer.attempts, 1)
  assert.equal(new Set(tokens.map((token) => token.jti)).size, 1)
  assert.equal(cache.peek()?.jti, tokens[0]?.jti)
})

// A signer that breaks: past the first token's floor, 503 is the only answer (fail closed).
// Otherwise no get() may fail: a slow signature is waited for, and a failed refresh is retried
// by the next request, long before the floor.
for (const { name, mode, durationMs } of [
  { name: 'a fast signer', mode: 'ok', durationMs: 0 },
  { name: 'a slow signer (3 s of clock time per signature)', mode: 'ok', durationMs: 3_000 },
  { name: 'a signer that fails every other time', mode: 'fail-every-other', durationMs: 0 },
  { name: 'a signer that breaks after the first token', mode: 'fail-after-first', durationMs: 0 },
] as const) {
  test(`no get() returns a token below the quarter-lifetime floor, with ${name}`, async () => {
    const { clock, signer, cache } = setup()
    await cache.get()
    signer.mode = mode
    signer.durationMs = durationMs
    const STEP_MS = 100
    /** `asked` and `answered` are clock milliseconds since T0. */
    const outcomes: { token?: Token; error?: unknown; asked: number; answered: number }[] = []
    const pending = new Set<Promise<void>>()
    // Three lifetimes in 100 ms steps; the floor is checked when get() answers, not when it was asked.
    for (let elapsed = 0; elapsed <= 3 * TTL_MS; elapsed += STEP_MS) {
      const asked = clock.now() - T0
      // The synchronous fast path hands out only fresh tokens, so never one below the floor.
      const fast = cache.current()
      if (fast) assertAboveFloor(fast, clock.now() / 1000, `current() at +${asked} ms`)
      const outcome = cache.get().then(
        (token) => void outcomes.push({ token, asked, answered: clock.now() - T0 }),
        (error: unknown) => void outcomes.push({ error, asked, answered: clock.now() - T0 }),
      )
      pending.add(outcome)
      void outcome.then(() => pending.delete(outcome))
      await settle(signer)
      clock.advance(STEP_MS)
    }
    for (let i = 0; pending.size > 0 && i < 100; i++) {
      clock.advance(STEP_MS)
      await settle(signer)
    }
    assert.equal(pending.size, 0, 'every get() answered')

    for (const { token, error, asked, answered } of outcomes) {
      if (token) assertAboveFloor(token, (T0 + answered) / 1000, `get() asked at +${asked} ms`)
      else assertTokenUnavailable(error)
    }
    const failures = outcomes.filter((outcome) => outcome.error !== undefined)
    if (mode === 'fail-after-first') {
      // The first token is served until its floor, and never after: then 503, fail closed.
      const served = outcomes.filter((outcome) => outcome.token)
      assert.ok(served.length > 0 && failures.length > 0)
      const floorAt = (TTL_SECONDS - FLOOR_SECONDS) * 1000
      assert.ok(served.every((outcome) => outcome.answered <= floorAt))
      assert.ok(
        served.some((outcome) => outcome.answered >= floorAt - 500),
        'failed refreshes leave the current token serving up to its floor',
      )
      assert.equal(cache.peek(), undefined)
    } else {
      assert.deepEqual(
        failures.map(({ asked }) => asked),
        [],
        'no 503 while signing can succeed (clock ms when asked)',
      )
      // The token really was refreshed along the way, not merely checked.
      assert.ok(new Set(outcomes.map((outcome) => outcome.token?.jti)).size >= 4)
    }
  })
}

test('a signer that always fails: get() rejects with 503, peek() is empty, and it recovers', async () => {
  const results: RefreshResult[] = []
  const { signer, cache } = setup({ onRefresh: (result) => results.push(result) })
  signer.mode = 'fail'
  await assert.rejects(cache.get(), assertTokenUnavailable)
  assert.equal(cache.peek(), undefined)
  await assert.rejects(cache.get(), assertTokenUnavailable, 'a failure is not cached as an answer')
  assert.ok(signer.attempts >= 2, 'each cold get() tries to sign again')
  assert.ok(results.length >= 2 && results.every((result) => result === 'failure'))

  signer.mode = 'ok'
  const token = await cache.get()
  assert.equal(cache.peek()?.jti, token.jti)
  assert.equal(results.at(-1), 'success')
})

test('invalidate(token) drops only that token, never a newer one', async () => {
  const { clock, signer, cache } = setup()
  const first = await cache.get()
  clock.advance(REFRESH_AFTER_MS + 1)
  await cache.get()
  const second = await waitFor(() => {
    const token = cache.peek()
    return token && token.jti !== first.jti ? token : undefined
  }, 'the refreshed token')
  assert.equal(signer.attempts, 2)

  // A request refused with the old token must not throw away the new one.
  cache.invalidate(first)
  assert.equal(cache.peek()?.jti, second.jti)
  assert.equal((await cache.get()).jti, second.jti)
  assert.equal(signer.attempts, 2, 'no new signature')

  // Many requests refused with the current token: one new signature between them.
  for (let i = 0; i < 10; i++) cache.invalidate(second)
  const thirds = await Promise.all(Array.from({ length: 10 }, () => cache.get()))
  assert.equal(signer.attempts, 3)
  assert.equal(new Set(thirds.map((token) => token.jti)).size, 1)
  assert.notEqual(thirds[0]?.jti, second.jti)
  for (let i = 0; i < 10; i++) cache.invalidate(second)
  assert.equal(cache.peek()?.jti, thirds[0]?.jti, 'late refusals of the replaced token change nothing')
})

async function refreshCount(proxy: RunningProxy, result: RefreshResult): Promise<number> {
  const metric = proxy.app.metrics.registry.getSingleMetric('media_proxy_token_refreshes_total') as Counter
  const { values } = await metric.get()
  return values.find((value) => value.labels.result === result)?.value ?? 0
}

/** The claims of the Bearer token in an Authorization header the emulator received. */
function receivedClaims(authorization: string | undefined): { jti: string; iat: number; exp: number } {
  const match = /^Bearer [\w-]+\.([\w-]+)\.[\w-]+$/.exec(authorization ?? '')
  assert.ok(match?.[1], 'the upstream got a Bearer JWS')
  return JSON.parse(Buffer.from(match[1], 'base64url').toString('utf8'))
}

test('through the proxy: one token for many requests, refreshed in the background, never below the floor', async (t) => {
  const clock = new ManualClock(T0)
  const emulator = await startEmulator(t, { now: () => clock.seconds })
  emulator.media.addSynthetic(MEDIA_ID, 256)
  const proxy = await startProxy(t, emulator.url, { JWT_TTL_SECONDS: String(TTL_SECONDS) }, { clock })
  let checked = 0

  /** `count` concurrent media requests; every token the emulator got is checked against the clock. */
  async function fetchMedia(count: number): Promise<string[]> {
    const statuses = await concurrentStatuses(`${proxy.mediaUrl}/media/${MEDIA_ID}`, count)
    assert.deepEqual(statuses, Array(count).fill(200))
    const received = emulator.requests.slice(checked)
    checked = emulator.requests.length
    assert.equal(received.length, count)
    return received.map((recorded) => {
      const claims = receivedClaims(recorded.headers.authorization)
      assert.ok(claims.exp - clock.seconds >= FLOOR_SECONDS, `sent with ${claims.exp - clock.seconds} s left`)
      assert.equal(recorded.jti, claims.jti, 'the emulator accepted it')
      return claims.jti
    })
  }

  const first = await fetchMedia(30)
  assert.equal(new Set(first).size, 1, 'one token for every request')
  assert.equal(await refreshCount(proxy, 'success'), 1)

  // Past two thirds: the request carries the current token while the next is signed.
  clock.advance(REFRESH_AFTER_MS + 1_000)
  assert.deepEqual(await fetchMedia(1), [first[0]])
  const refreshed = await waitFor(() => {
    const token = proxy.app.tokens.peek()
    return token && token.jti !== first[0] ? token : undefined
  }, 'the background refresh')
  assert.equal(refreshed.iat, Math.floor(clock.seconds))
  assert.deepEqual(await fetchMedia(10), Array(10).fill(refreshed.jti))

  // Past the refreshed token's floor in one jump: no request may carry it any more.
  clock.advance((TTL_SECONDS - FLOOR_SECONDS) * 1000 + 500)
  const third = await fetchMedia(10)
  assert.equal(new Set(third).size, 1)
  assert.notEqual(third[0], refreshed.jti)
  assert.equal(await refreshCount(proxy, 'success'), 3, 'three signatures for 51 requests')
  assert.equal(await refreshCount(proxy, 'failure'), 0)
})

test('through the proxy: with a broken key, the old token serves until its floor, then 503 and nothing upstream', async (t) => {
  const clock = new ManualClock(T0)
  const emulator = await startEmulator(t, { now: () => clock.seconds })
  emulator.media.addSynthetic(MEDIA_ID, 256)
  const proxy = await startProxy(t, emulator.url, { JWT_TTL_SECONDS: String(TTL_SECONDS) }, { clock })
  const get = async () => {
    const res = await request(`${proxy.mediaUrl}/media/${MEDIA_ID}`)
    return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
  }
  assert.equal((await get()).status, 200)
  const token = proxy.app.tokens.peek()
  assert.ok(token)

  // The key becomes unusable: an RS256 signature with an EC key fails.
  proxy.app.applications.signer(APPLICATION_ID)?.setKey(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)
  clock.advance(REFRESH_AFTER_MS + 1_000)
  assert.equal((await get()).status, 200, 'still inside the floor: the current token serves')
  assert.equal(receivedClaims(emulator.requests.at(-1)?.headers.authorization).jti, token.jti)
  await waitFor(async () => (await refreshCount(proxy, 'failure')) > 0, 'the background refresh to fail')

  clock.advance(2_000) // now below the floor
  const seen = emulator.requests.length
  const res = await get()
  assert.equal(res.status, 503)
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/)
  const problem = JSON.parse(res.body) as Record<string, unknown>
  assert.equal(problem.status, 503)
  assert.equal(problem.requestId, res.headers['x-request-id'])
  assert.deepEqual(Object.keys(problem).sort(), ['detail', 'requestId', 'status', 'title', 'type'])
  assert.doesNotMatch(res.body, /eyJ|PRIVATE KEY/)
  assert.equal(emulator.requests.length, seen, 'nothing reached the upstream')

  const ready = await request(`${proxy.adminUrl}/readyz`)
  await ready.body.dump()
  assert.equal(ready.statusCode, 503)
})
