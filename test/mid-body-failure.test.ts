// Proves that an upstream reset after the body started destroys the client connection, with Content-Length and chunked, so a truncated body never ends cleanly.
import assert from 'node:assert/strict'
import { get } from 'node:http'
import { test } from 'node:test'
import { accessLines, MEDIA_ID, startEmulator, startProxy, waitFor } from './helpers.js'

const FAST_RETRY = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 5 }
const SIZE = 256 * 1024
const CUT_AT = 100_000

interface ClientOutcome {
  status: number | undefined
  headers: Record<string, string | string[] | undefined>
  received: number
  /** 'end' only for a clean end of the body; 'error' or 'aborted' for a cut connection. */
  ending: 'end' | 'error' | 'aborted'
}

/** A plain node:http client, so the test sees exactly how the response ended on the wire. */
function fetchThrough(url: string): Promise<ClientOutcome> {
  return new Promise((resolve, reject) => {
    let outcome: ClientOutcome | undefined
    const req = get(url, (res) => {
      const started: ClientOutcome = { status: res.statusCode, headers: res.headers, received: 0, ending: 'end' }
      outcome = started
      res.on('data', (chunk: Buffer) => {
        started.received += chunk.length
      })
      res.once('aborted', () => {
        if (outcome) outcome.ending = 'aborted'
      })
      res.once('error', () => {
        if (outcome?.ending === 'end') outcome.ending = 'error'
      })
      res.once('end', () => resolve(outcome as ClientOutcome))
      res.once('close', () => {
        if (!res.complete && outcome?.ending === 'end') outcome.ending = 'error'
        resolve(outcome as ClientOutcome)
      })
    })
    // The proxy cuts with a reset: after the response started, that is the cut, not a failure.
    req.once('error', (err) => {
      if (outcome === undefined) reject(err)
      else {
        if (outcome.ending === 'end') outcome.ending = 'error'
        resolve(outcome)
      }
    })
  })
}

for (const chunked of [false, true]) {
  const framing = chunked ? 'chunked encoding' : 'Content-Length'
  test(`an upstream reset mid-body (${framing}) destroys the client connection`, async (t) => {
    const emulator = await startEmulator(t)
    emulator.media.addSynthetic(MEDIA_ID, SIZE)
    emulator.faults.push({ resetAfterBytes: CUT_AT, chunked })
    const proxy = await startProxy(t, emulator.url, {}, { retry: FAST_RETRY })

    const outcome = await fetchThrough(`${proxy.mediaUrl}/media/${MEDIA_ID}`)

    assert.equal(outcome.status, 200)
    assert.equal(outcome.headers['content-length'], chunked ? undefined : String(SIZE))
    assert.equal(outcome.headers['transfer-encoding'], chunked ? 'chunked' : undefined)
    assert.notEqual(outcome.ending, 'end', 'a truncated body must never end cleanly')
    assert.ok(outcome.received <= CUT_AT, `received ${outcome.received} bytes`)
    // The emulator cut one response and was not asked again: no retry once the body started.
    assert.equal(emulator.requests.length, 1)
    assert.equal(emulator.requests[0]?.aborted, true)
    const line = await waitFor(() => accessLines(proxy)[0], 'the access log line')
    assert.equal(line.aborted, true)
    assert.equal(proxy.app.inFlight.count, 0)
  })
}
