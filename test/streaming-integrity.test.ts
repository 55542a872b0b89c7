// Bodies of 1 KiB to 256 MiB arrive byte-identical, and the proxy's RSS does not grow with the body.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { request } from 'undici'
import { syntheticStream } from '../src/emulator/media-store.js'
import { proxyEnv, spawnProxy, startEmulator, startProxy } from './helpers.js'

const KiB = 1024
const MiB = 1024 * KiB
const BIG = 256 * MiB
/** How far the proxy's RSS may rise above its idle level while it streams BIG. */
const RSS_HEADROOM = 64 * MiB
const RSS_SAMPLE_MS = 50

const expectedHashes = new Map<number, Promise<string>>()

/** sha256 of the synthetic body of this size, streamed from the emulator's own generator. */
function expectedSha256(size: number): Promise<string> {
  let hash = expectedHashes.get(size)
  if (!hash) {
    hash = sha256Stream(syntheticStream(0, size - 1)).then(({ digest }) => digest)
    expectedHashes.set(size, hash)
  }
  return hash
}

async function sha256Stream(body: AsyncIterable<Buffer>): Promise<{ digest: string; bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of body) {
    hash.update(chunk)
    bytes += chunk.length
  }
  return { digest: hash.digest('hex'), bytes }
}

/** Downloads through the proxy without holding the body: only its length and hash are kept. */
async function download(
  url: string,
): Promise<{ status: number; contentLength: string; digest: string; bytes: number }> {
  const res = await request(url)
  const { digest, bytes } = await sha256Stream(res.body)
  return { status: res.statusCode, contentLength: String(res.headers['content-length']), digest, bytes }
}

function residentBytes(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  if (kib === undefined) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(kib) * KiB
}

test('bodies of 1 KiB, 1 MiB, an odd size and 256 MiB arrive byte-identical', { timeout: 120_000 }, async (t) => {
  const emulator = await startEmulator(t)
  const proxy = await startProxy(t, emulator.url)
  const sizes = [KiB, MiB, MiB + 251 * 3 + 1, BIG]
  const ids = sizes.map((size, index) => {
    const id = `00000000-0000-4000-8000-${String(index + 1).padStart(12, '0')}`
    emulator.media.addSynthetic(id, size)
    return id
  })

  for (const [index, size] of sizes.entries()) {
    const got = await download(`${proxy.mediaUrl}/media/${ids[index]}`)
    assert.equal(got.status, 200, `${size} bytes`)
    assert.equal(got.contentLength, String(size), `${size} bytes`)
    assert.equal(got.bytes, size, `${size} bytes`)
    assert.equal(got.digest, await expectedSha256(size), `${size} bytes: sha256`)
  }
  assert.ok(
    emulator.requests.every((r) => !r.aborted),
    'every upstream response was sent completely',
  )
})

test("the proxy's RSS stays within 64 MiB of idle while it streams 256 MiB", { timeout: 120_000 }, async (t) => {
  const emulator = await startEmulator(t)
  const id = '00000000-0000-4000-8000-000000000256'
  emulator.media.addSynthetic(id, BIG)
  const proxy = await spawnProxy(t, proxyEnv(emulator.url))
  const url = `${proxy.mediaUrl}/media/${id}`
  const expected = await expectedSha256(BIG)

  // Warm-up: JIT, socket buffers and the heap reach their working size on a first full download.
  const warmUp = await download(url)
  assert.equal(warmUp.digest, expected, 'warm-up download: sha256')

  const idle = residentBytes(proxy.pid)
  const samples: number[] = []
  const sampler = setInterval(() => samples.push(residentBytes(proxy.pid)), RSS_SAMPLE_MS)
  let got: Awaited<ReturnType<typeof download>>
  try {
    got = await download(url)
  } finally {
    clearInterval(sampler)
  }
  samples.push(residentBytes(proxy.pid))

  assert.equal(got.status, 200)
  assert.equal(got.bytes, BIG)
  assert.equal(got.digest, expected, 'sha256')
  assert.ok(samples.length >= 3, `RSS sampled during the download (${samples.length} samples)`)
  const peak = Math.max(...samples)
  const growth = peak - idle
  t.diagnostic(
    `proxy RSS idle ${(idle / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB over ${samples.length} samples`,
  )
  assert.ok(
    growth < RSS_HEADROOM,
    `RSS grew by ${(growth / MiB).toFixed(1)} MiB (idle ${(idle / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB)`,
  )
})
