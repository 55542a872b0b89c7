// The files of the cache on disk and their index. One file per stored response, named by the
// SHA-256 of its key (application, upstream host, path), in <CACHE_DIR>/data:
//
//   "VMP1" | header length (uint32 BE) | header (JSON: key, length, headers) | body | SHA-256 of the body (64 hex)
//
// A file is written in <CACHE_DIR>/tmp and renamed into data/ only once its body is complete and
// its length checked, so data/ never holds a partly written file; tmp/ is emptied at start (a
// crash mid-store leaves nothing that is ever served). The index is an LRU of file sizes
// (lru-cache with maxSize), rebuilt at start from the directory listing alone; each file's
// header is read when it is served, and a file whose size disagrees with its header is removed.
import { createHash, randomBytes } from 'node:crypto'
import {
  closeSync,
  mkdirSync,
  open,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { LRUCache } from 'lru-cache'
import { ConfigError } from '../config.js'
import type { StoredHeaders } from './response-plan.js'

const MAGIC = Buffer.from('VMP1')
const PREAMBLE = 8
export const TRAILER = 64
/** Enough for the preamble and any header we write; a longer one is read in a second call. */
const HEAD_READ = 4096
const HASH_NAME = /^[0-9a-f]{64}$/

export interface StoredHead {
  readonly key: string
  readonly length: number
  readonly headers: StoredHeaders
}

/** A stored file, opened for reading: its descriptor is the caller's to close. */
export interface OpenedFile {
  readonly fd: number
  readonly head: StoredHead
  readonly bodyOffset: number
  /** The start of the body, read with the header: all of a small file. */
  readonly bodyStart: Buffer
}

/** How many empty temporary files are kept ready (see takeTemp). */
const TEMP_POOL_SIZE = 4

/** A temporary file, opened for writing. */
export interface TempFile {
  readonly fd: number
  readonly path: string
}

export interface StoreEvents {
  onEviction(): void
}

export class DiskStore {
  readonly dataDir: string
  readonly tmpDir: string
  readonly maxBytes: number
  /** False when the directory cannot be written (read-only): files already there are still served. */
  readonly writable: boolean
  /** Bytes of files being stored now: the free space they will take is not free. */
  reserved = 0
  readonly #pool: TempFile[] = []
  #making = 0
  #closed = false
  readonly #index: LRUCache<string, number>

  /** Opens (creating) the directory, empties tmp/ and indexes data/; synchronous, at start. */
  constructor(dir: string, maxBytes: number, events: StoreEvents) {
    this.dataDir = join(dir, 'data')
    this.tmpDir = join(dir, 'tmp')
    this.maxBytes = maxBytes
    this.#index = new LRUCache<string, number>({
      maxSize: maxBytes,
      sizeCalculation: (size) => size,
      dispose: (_size, hash, reason) => {
        // A replacement is renamed over the same path: only an eviction or a delete removes it.
        if (reason !== 'evict' && reason !== 'delete') return
        // Synchronous, so that it cannot land after a later store renamed a new file there. A
        // reader that has the file open keeps reading it (POSIX unlink semantics).
        removeQuietly(this.pathOf(hash))
        if (reason === 'evict') events.onEviction()
      },
    })
    try {
      // Customer files: the directories the proxy makes are its user's alone.
      mkdirSync(this.dataDir, { recursive: true, mode: 0o700 })
    } catch (err) {
      throw new ConfigError('CACHE_DIR', `${dir} cannot be created (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    this.writable = prepareTmp(this.tmpDir)
    this.#rebuild()
    this.#refill()
  }

  get storedBytes(): number {
    return this.#index.calculatedSize
  }

  get size(): number {
    return this.#index.size
  }

  hashOf(key: string): string {
    return createHash('sha256').update(key).digest('hex')
  }

  pathOf(hash: string): string {
    return join(this.dataDir, hash)
  }

  /**
   * A new, empty temporary file to store a download in, opened for writing. Taken from a few
   * made ahead in the background: creating a file can take a millisecond on a busy or slow
   * disk (ext4 allocating an inode), which must not stall every other request on the event
   * loop. When a burst has emptied the pool, one is made on the spot.
   */
  takeTemp(): TempFile {
    const temp = this.#pool.pop()
    this.#refill()
    if (temp !== undefined) return temp
    const path = this.#newTempPath()
    return { fd: openSync(path, 'wx', 0o600), path }
  }

  /** Shutdown: the files made ahead are closed and removed. */
  close(): void {
    this.#closed = true
    for (const { fd, path } of this.#pool.splice(0)) {
      closeSync(fd)
      removeQuietly(path)
    }
  }

  #newTempPath(): string {
    return join(this.tmpDir, randomBytes(8).toString('hex'))
  }

  #refill(): void {
    while (this.writable && !this.#closed && this.#pool.length + this.#making < TEMP_POOL_SIZE) {
      this.#making++
      const path = this.#newTempPath()
      // Customer files: readable by the proxy's user only.
      open(path, 'wx', 0o600, (err, fd) => {
        this.#making--
        if (err) return // A full or read-only disk: takeTemp() finds out, and says so.
        if (this.#closed) {
          closeSync(fd)
          removeQuietly(path)
          return
        }
        this.#pool.push({ fd, path })
      })
    }
  }

  /**
   * The stored file for this key, opened, its header read (synchronously: a few microseconds
   * from the page cache, less than a trip through the thread pool); undefined when there is
   * none, or it is damaged (then it is removed).
   */
  open(key: string, hash: string): OpenedFile | undefined {
    const size = this.#index.get(hash)
    if (size === undefined) return undefined
    let fd: number | undefined
    try {
      fd = openSync(this.pathOf(hash), 'r')
      const { head, bodyOffset, bodyStart } = readHead(fd)
      if (head.key !== key || bodyOffset + head.length + TRAILER !== size) throw new Error('damaged')
      return { fd, head, bodyOffset, bodyStart: bodyStart.subarray(0, head.length) }
    } catch {
      if (fd !== undefined) closeSync(fd)
      this.#index.delete(hash)
      return undefined
    }
  }

  /** The SHA-256 recorded at the end of an opened file. */
  digestOf(file: OpenedFile): string {
    const trailer = Buffer.alloc(TRAILER)
    readSync(file.fd, trailer, 0, TRAILER, file.bodyOffset + file.head.length)
    return trailer.toString('latin1')
  }

  /**
   * A complete, checked file in tmp/ becomes the stored one. False when it is larger than the
   * whole cache (it is removed, as it would be evicted at once).
   */
  commit(hash: string, tempPath: string, size: number): boolean {
    if (size > this.maxBytes) {
      removeQuietly(tempPath)
      return false
    }
    renameSync(tempPath, this.pathOf(hash))
    this.#index.set(hash, size)
    return true
  }

  /** data/ as it is on disk: oldest first into the LRU, so the newest are kept when it is full. */
  #rebuild(): void {
    const found: Array<{ hash: string; size: number; mtime: number }> = []
    for (const name of readdirSync(this.dataDir)) {
      const path = join(this.dataDir, name)
      if (!HASH_NAME.test(name)) {
        if (this.writable) rmSync(path, { recursive: true, force: true })
        continue
      }
      try {
        const stat = statSync(path)
        if (stat.isFile() && stat.size > PREAMBLE + TRAILER) {
          found.push({ hash: name, size: stat.size, mtime: stat.mtimeMs })
        }
      } catch {
        // Removed while we listed: nothing to index.
      }
    }
    found.sort((a, b) => a.mtime - b.mtime)
    for (const { hash, size } of found) this.#index.set(hash, size)
  }
}

/** The header of a file to be stored: written first, so that the body follows it as it arrives. */
export function encodeHead(head: StoredHead): Buffer {
  const json = Buffer.from(JSON.stringify(head), 'utf8')
  const preamble = Buffer.alloc(PREAMBLE)
  MAGIC.copy(preamble)
  preamble.writeUInt32BE(json.length, 4)
  return Buffer.concat([preamble, json])
}

function readHead(fd: number): { head: StoredHead; bodyOffset: number; bodyStart: Buffer } {
  let buffer = Buffer.allocUnsafe(HEAD_READ)
  let read = readSync(fd, buffer, 0, HEAD_READ, 0)
  if (read < PREAMBLE || !buffer.subarray(0, 4).equals(MAGIC)) throw new Error('not a cache file')
  const length = buffer.readUInt32BE(4)
  if (PREAMBLE + length > read) {
    buffer = Buffer.allocUnsafe(PREAMBLE + length)
    read = readSync(fd, buffer, 0, PREAMBLE + length, 0)
    if (read < PREAMBLE + length) throw new Error('truncated header')
  }
  const head = JSON.parse(buffer.toString('utf8', PREAMBLE, PREAMBLE + length)) as StoredHead
  if (typeof head.key !== 'string' || !Number.isSafeInteger(head.length) || typeof head.headers !== 'object') {
    throw new Error('bad header')
  }
  return { head, bodyOffset: PREAMBLE + length, bodyStart: buffer.subarray(PREAMBLE + length, read) }
}

/** Empties tmp/ (what a crash left) and checks a file can be written there. */
function prepareTmp(tmpDir: string): boolean {
  try {
    rmSync(tmpDir, { recursive: true, force: true })
    mkdirSync(tmpDir, { recursive: true, mode: 0o700 })
    const probe = join(tmpDir, '.probe')
    writeFileSync(probe, '')
    unlinkSync(probe)
    return true
  } catch {
    return false
  }
}

export function removeQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // Already gone.
  }
}
