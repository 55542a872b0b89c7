// One upstream download of a file that is not stored yet, shared by every request for it that
// arrives meanwhile (nginx's proxy_cache_lock, without the wait). It is the exchange's sink:
//
// - a complete 200 with a Content-Length that fits is written to a temporary file as it
//   arrives, paused only by the disk, and every request reads its part of the body from that
//   file as the bytes land (file-reader.ts): a slow client slows nobody else, and holds one read
//   buffer. Once the whole body is on disk and its length checked, the file is renamed into
//   the store. If every client leaves, the download still completes (as nginx does for a
//   cacheable response): the file is worth keeping.
// - anything else (an error, a 200 without a length, a disk that cannot take it) is relayed to
//   the request that started the download, as without a cache; the others make their own
//   request, as they would have without a cache.
import { createHash } from 'node:crypto'
import { closeSync, statfsSync, writeSync, writev } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { errors, type ProxyError } from '../errors.js'
import type { Exchange, ExchangeSummary, ResponseSink, UpstreamClient, UpstreamRequest } from '../relay/upstream.js'
import { type DiskStore, encodeHead, removeQuietly, type StoredHead, type TempFile, TRAILER } from './disk-store.js'
import type { GrowingFile } from './file-reader.js'
import { STORED_RESPONSE_HEADERS } from './response-plan.js'

/** Body bytes waiting for the disk before the upstream is paused. */
const DISK_QUEUE_HIGH = 1024 * 1024
/** Free space kept on the cache's filesystem beyond a file being stored. */
const FREE_SPACE_MARGIN = 16 * 1024 * 1024

/** What a POST is answered with once the file is stored. */
export interface StoredDescription {
  readonly bytes: number
  readonly contentType: string | null
  readonly sha256: string
}

/** A request waiting on a fill: told what happened to it. */
export interface FillSubscriber {
  /** The file is being written: serve from it. */
  storing(fill: Fill): void
  /**
   * It will not be stored. The request that started the fill gets the upstream response
   * relayed live (its sink is returned); the others go upstream themselves (undefined).
   */
  passthrough(starter: boolean): ResponseSink | undefined
  /** Nothing will come (the upstream failed before answering): answer with this problem. */
  failed(problem: ProxyError): void
  /** The whole file is stored (a POST is answered now). */
  complete(description: StoredDescription): void
  /** Storing stopped part-way: readers find out from the file; a POST is answered with this problem. */
  broken(problem: ProxyError): void
}

export interface FillEvents {
  onWriteFailure(reason: string): void
  /** The fill is over, one way or another: it no longer takes new requests. */
  onDone(fill: Fill): void
  /** Everyone left a fill being stored: may it finish unattended? */
  adoptOrphan(fill: Fill): boolean
}

type State = 'waiting' | 'storing' | 'passthrough' | 'done'

export class Fill implements ResponseSink, GrowingFile {
  readonly hash: string
  readonly #key: string
  readonly #store: DiskStore
  readonly #events: FillEvents
  readonly #subscribers = new Set<FillSubscriber>()
  #starter: FillSubscriber | undefined
  #exchange: Exchange | undefined
  #state: State = 'waiting'
  /** Passthrough: the starter's sink. */
  #target: ResponseSink | undefined
  // Storing:
  #fd: number | undefined
  #tempPath = ''
  #head: StoredHead | undefined
  #bodyOffset = 0
  #written = 0
  #queue: Buffer[] = []
  #queued = 0
  #writing = false
  #pausedForDisk = false
  #upstreamEnded = false
  readonly #digest = createHash('sha256')
  readonly #listeners = new Set<() => void>()
  #broken: Error | undefined
  /** Why a 200 is not stored: it has no length, or the disk cannot take it. */
  #refusal: 'no-length' | 'disk' | undefined
  #orphaned = false
  /** Disk space counted as taken while this file is stored. */
  #reservation = 0

  constructor(key: string, hash: string, store: DiskStore, events: FillEvents) {
    this.#key = key
    this.hash = hash
    this.#store = store
    this.#events = events
  }

  /** Starts the one upstream request; `request` carries no Range and no conditions. */
  begin(upstream: UpstreamClient, request: UpstreamRequest): void {
    this.#exchange = upstream.send(request, this)
  }

  get summary(): ExchangeSummary | undefined {
    return this.#exchange?.summary
  }

  /** Where the file is now (tmp/ until it is complete). */
  get path(): string {
    return this.#tempPath
  }

  /** Why a 200 was not stored, once start() has decided. */
  get refusal(): 'no-length' | 'disk' | undefined {
    return this.#refusal
  }

  get head(): StoredHead | undefined {
    return this.#head
  }

  get bodyOffset(): number {
    return this.#bodyOffset
  }

  subscribe(subscriber: FillSubscriber, starter: boolean): void {
    this.#subscribers.add(subscriber)
    if (starter) this.#starter = subscriber
    if (this.#state === 'storing') subscriber.storing(this)
  }

  /**
   * A request went away. The download goes on while anyone waits, or while it is being stored
   * and the cache lets it finish unattended (a bounded number of such downloads at a time).
   */
  unsubscribe(subscriber: FillSubscriber): void {
    this.#subscribers.delete(subscriber)
    if (subscriber === this.#starter) this.#starter = undefined
    if (this.#subscribers.size > 0) return
    if (this.#state === 'waiting') {
      this.#exchange?.cancel()
      this.#finish()
    } else if (this.#state === 'storing' && !this.#orphaned) {
      // Counted once, however often its readers come and go.
      if (this.#events.adoptOrphan(this)) this.#orphaned = true
      else this.cancel()
    }
  }

  /** Stored with nobody reading: the cache counts these. */
  get orphaned(): boolean {
    return this.#orphaned
  }

  // The passthrough's controls, for the starter's sink.
  readonly resumeRelay = (): void => this.#exchange?.resume()
  readonly cancelRelay = (): void => this.#exchange?.cancel()

  /** Cuts the download (shutdown): readers see a broken file, a POST a 503. */
  cancel(): void {
    if (this.#state === 'done') return
    this.#exchange?.cancel()
    if (this.#state === 'storing') this.#stopStoring(new Error('the proxy is shutting down'), errors.shuttingDown())
    else {
      for (const subscriber of this.#subscribers) subscriber.failed(errors.shuttingDown())
      this.#finish()
    }
  }

  // GrowingFile, for the readers:
  available(): number {
    return this.#written
  }

  get broken(): Error | undefined {
    return this.#broken
  }

  wait(listener: () => void): void {
    this.#listeners.add(listener)
  }

  unwait(listener: () => void): void {
    this.#listeners.delete(listener)
  }

  // ResponseSink, for the exchange:
  start(status: number, headers: IncomingHttpHeaders): boolean {
    if (this.#state !== 'waiting') return false
    const length = contentLength(headers)
    if (status === 200 && length !== undefined && this.#openTemp(length, headers)) {
      this.#state = 'storing'
      for (const subscriber of [...this.#subscribers]) subscriber.storing(this)
      return true
    }
    if (status === 200) this.#refusal = length === undefined ? 'no-length' : 'disk'
    // Not stored: nobody new joins, the starter gets it relayed, the others go upstream.
    this.#state = 'passthrough'
    this.#events.onDone(this)
    for (const subscriber of [...this.#subscribers]) {
      const sink = subscriber.passthrough(subscriber === this.#starter)
      if (sink) this.#target = sink
    }
    this.#subscribers.clear()
    const target = this.#target
    if (!target) {
      this.#state = 'done'
      return false
    }
    return target.start(status, headers)
  }

  data(chunk: Buffer): boolean {
    if (this.#state === 'passthrough') return (this.#target as ResponseSink).data(chunk)
    if (this.#state !== 'storing') return true
    this.#digest.update(chunk)
    this.#queue.push(chunk)
    this.#queued += chunk.length
    this.#flush()
    if (this.#queued <= DISK_QUEUE_HIGH) return true
    this.#pausedForDisk = true
    return false
  }

  end(): void {
    if (this.#state === 'passthrough') {
      this.#state = 'done'
      ;(this.#target as ResponseSink).end()
      return
    }
    if (this.#state !== 'storing') return
    this.#upstreamEnded = true
    if (!this.#writing && this.#queued === 0) this.#complete()
  }

  fail(problem: ProxyError): void {
    if (this.#state !== 'waiting') return
    for (const subscriber of this.#subscribers) subscriber.failed(problem)
    this.#finish()
  }

  abort(error: Error): void {
    if (this.#state === 'passthrough') {
      this.#state = 'done'
      ;(this.#target as ResponseSink).abort(error)
      return
    }
    if (this.#state === 'storing') this.#stopStoring(error, errors.upstreamUnavailable(error))
  }

  /** The temporary file, with its header written; false when the disk cannot take it. */
  #openTemp(length: number, headers: IncomingHttpHeaders): boolean {
    const store = this.#store
    if (!store.writable) {
      this.#events.onWriteFailure('read-only')
      return false
    }
    const stored: Record<string, string> = {}
    for (const name of STORED_RESPONSE_HEADERS) {
      const value = headers[name] as string | string[] | undefined
      if (value !== undefined) stored[name] = typeof value === 'string' ? value : value.join(', ')
    }
    const head: StoredHead = { key: this.#key, length, headers: stored }
    const encoded = encodeHead(head)
    const size = encoded.length + length + TRAILER
    // Larger than the whole cache: it would be evicted at once.
    if (size > store.maxBytes) return false
    let temp: TempFile | undefined
    try {
      // Other files being stored will take their share of the free space too.
      if (!hasRoom(store.tmpDir, size + store.reserved)) throw Object.assign(new Error('no space'), { code: 'ENOSPC' })
      temp = store.takeTemp()
      writeSync(temp.fd, encoded)
    } catch (err) {
      if (temp !== undefined) {
        closeSync(temp.fd)
        removeQuietly(temp.path)
      }
      this.#events.onWriteFailure((err as NodeJS.ErrnoException).code ?? 'error')
      return false
    }
    this.#fd = temp.fd
    this.#reservation = size
    store.reserved += size
    this.#tempPath = temp.path
    this.#head = head
    this.#bodyOffset = encoded.length
    return true
  }

  /** Writes what is queued, one writev at a time, in order. */
  #flush(): void {
    if (this.#writing || this.#queued === 0 || this.#fd === undefined) return
    const chunks = this.#queue
    const bytes = this.#queued
    this.#queue = []
    this.#writing = true
    writev(this.#fd, chunks, this.#bodyOffset + this.#written, (err, written) => {
      this.#writing = false
      if (this.#state !== 'storing') return
      if (err || written !== bytes) {
        const code = (err as NodeJS.ErrnoException | null)?.code ?? 'ENOSPC'
        this.#events.onWriteFailure(code)
        const error = err ?? Object.assign(new Error('short write'), { code })
        this.#exchange?.cancel()
        this.#stopStoring(error, errors.cacheWriteFailed(error))
        return
      }
      this.#written += bytes
      this.#queued -= bytes
      this.#notify()
      if (this.#pausedForDisk && this.#queued <= DISK_QUEUE_HIGH) {
        this.#pausedForDisk = false
        this.#exchange?.resume()
      }
      if (this.#queued > 0) this.#flush()
      else if (this.#upstreamEnded) this.#complete()
    })
  }

  /** The body is on disk: check it, seal it with its digest and move it into the store. */
  #complete(): void {
    const head = this.#head as StoredHead
    const fd = this.#fd as number
    if (this.#written !== head.length) {
      this.#stopStoring(new Error('length differs from Content-Length'), errors.upstreamUnavailable())
      return
    }
    const sha256 = this.#digest.digest('hex')
    try {
      writeSync(fd, Buffer.from(sha256, 'latin1'), 0, TRAILER, this.#bodyOffset + head.length)
      closeSync(fd)
      this.#fd = undefined
      this.#store.commit(this.hash, this.#tempPath, this.#bodyOffset + head.length + TRAILER)
    } catch (err) {
      this.#events.onWriteFailure((err as NodeJS.ErrnoException).code ?? 'error')
      // Every byte reached the readers' file already: only a POST needs to hear of it.
      this.#closeTemp()
      for (const subscriber of this.#subscribers) subscriber.broken(errors.cacheWriteFailed(err))
      this.#finish()
      return
    }
    const description: StoredDescription = {
      bytes: head.length,
      contentType: head.headers['content-type'] ?? null,
      sha256,
    }
    this.#notify()
    for (const subscriber of this.#subscribers) subscriber.complete(description)
    this.#finish()
  }

  #stopStoring(error: Error, problem: ProxyError): void {
    this.#broken = error
    this.#closeTemp()
    this.#notify()
    for (const subscriber of this.#subscribers) subscriber.broken(problem)
    this.#finish()
  }

  #closeTemp(): void {
    if (this.#fd !== undefined) {
      closeSync(this.#fd)
      this.#fd = undefined
    }
    // Readers that opened it keep their descriptors.
    removeQuietly(this.#tempPath)
  }

  #notify(): void {
    if (this.#listeners.size === 0) return
    const listeners = [...this.#listeners]
    this.#listeners.clear()
    for (const listener of listeners) listener()
  }

  #finish(): void {
    if (this.#state === 'done') return
    this.#state = 'done'
    this.#store.reserved -= this.#reservation
    this.#reservation = 0
    this.#subscribers.clear()
    this.#events.onDone(this)
  }
}

function contentLength(headers: IncomingHttpHeaders): number | undefined {
  const value = headers['content-length']
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined
  return Number(value)
}

/** Whether the filesystem has room for this file and a margin (statfs: a few microseconds). */
function hasRoom(dir: string, bytes: number): boolean {
  const stats = statfsSync(dir)
  return stats.bavail * stats.bsize >= bytes + FREE_SPACE_MARGIN
}
