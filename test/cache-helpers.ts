// What the cache tests share: a cache directory removed after the test, a whole response read
// into memory, the bytes a synthetic emulator file holds, and the emulator's media requests.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { request } from 'undici'
import type { VonageEmulator } from '../src/emulator/emulator.js'
import { syntheticStream } from '../src/emulator/media-store.js'

export function cacheDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmp-cache-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await request(url, { method, headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

/** The bytes [start, start + size) of a synthetic emulator file. */
export async function synthetic(size: number, start = 0): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of syntheticStream(start, start + size - 1)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** The requests for /v3/media files that reached the emulator. */
export function mediaRequests(emulator: VonageEmulator) {
  return emulator.requests.filter((r) => r.url.includes('/v3/media/'))
}
