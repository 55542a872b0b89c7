// The index-rebuild fixture: many stored responses in a cache directory, written as the proxy
// stores them (src/cache/disk-store.ts: its layout, header and trailer), each a tiny body under
// the key the proxy gives GET /media/<id> (src/cache/media-cache.ts), so that a proxy started on
// the directory indexes every one and answers any of them from disk.
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { setImmediate } from 'node:timers/promises'
import { DiskStore, encodeHead, TRAILER } from '../src/cache/disk-store.js'

/**
 * Files written between two turns of the event loop (a few milliseconds), so that the clients
 * this process runs meanwhile keep their pace. Written synchronously: through the thread pool,
 * each write cost more than the write itself (18 s for 100,000 on tmpfs, against 3 s).
 */
const FILES_PER_TURN = 250

/** What every fixture file holds, and a hit on one answers. */
export const FIXTURE_BODY = Buffer.from('a stored file, for the index rebuild\n')

/** The id of fixture file i: its last group is no origin file's, so only the cache can answer it. */
export function fixtureId(i: number): string {
  return `${i.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`
}

/**
 * Writes files 0 to files - 1 for this application and upstream origin (scheme://host:port) into
 * <dir>/data, straight there rather than through tmp/ as the proxy does: no proxy reads the
 * directory until they are all written. Stops early, resolving, once the signal is aborted.
 */
export async function writeStoredFiles(
  dir: string,
  files: number,
  applicationId: string,
  upstreamOrigin: string,
  signal: AbortSignal,
): Promise<void> {
  // The store names the files: opened on an empty directory, it only creates data/ and tmp/.
  const store = new DiskStore(dir, Number.MAX_SAFE_INTEGER, { onEviction() {} })
  const trailer = Buffer.from(createHash('sha256').update(FIXTURE_BODY).digest('hex'), 'latin1')
  if (trailer.length !== TRAILER) throw new Error(`a trailer is ${TRAILER} bytes, not ${trailer.length}`)
  for (let i = 0; i < files && !signal.aborted; i++) {
    // media-cache.ts's key: application, upstream origin and path.
    const key = `${applicationId}\n${upstreamOrigin}/v3/media/${fixtureId(i)}`
    const head = encodeHead({ key, length: FIXTURE_BODY.length, headers: { 'content-type': 'text/plain' } })
    // As the proxy writes them: its user's alone.
    writeFileSync(store.pathOf(store.hashOf(key)), Buffer.concat([head, FIXTURE_BODY, trailer]), { mode: 0o600 })
    if (i % FILES_PER_TURN === FILES_PER_TURN - 1) await setImmediate()
  }
}
