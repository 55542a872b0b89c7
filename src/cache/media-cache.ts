// The cache in front of the upstream (CACHE_DIR): for each media request that passed its
// checks, answer from a stored file (hit), join or start the one download of a file not stored
// yet (miss), or go upstream as without a cache (bypass: HEAD, and conditional requests, for a
// file not stored). The key is the application, the upstream origin and the path.
import { closeSync, openSync } from 'node:fs'
import { errors, type ProxyError } from '../errors.js'
import {
  type ExchangeSummary,
  type MediaSource,
  NO_UPSTREAM,
  type ResponseSink,
  type UpstreamClient,
  type UpstreamRequest,
} from '../relay/upstream.js'
import { DiskStore } from './disk-store.js'
import { FileReader } from './file-reader.js'
import { Fill, type FillSubscriber, type StoredDescription } from './fill.js'
import { type Conditions, planResponse } from './response-plan.js'

export type CacheResult = 'hit' | 'miss' | 'bypass'

/** Cache-Status values (RFC 9211). */
export const CACHE_HIT = 'vonage-media-proxy; hit'
export const CACHE_MISS = 'vonage-media-proxy; fwd=uri-miss'
export const CACHE_STORED = 'vonage-media-proxy; fwd=uri-miss; stored'

/** A media response's sink, which can also answer a POST with what was stored. */
export interface CacheSink extends ResponseSink {
  stored(status: 200 | 201, description: StoredDescription, cacheStatus: string): void
}

export interface CacheEvents {
  onEviction(): void
  /** A file could not be written (disk full, read-only...): for the alert. */
  onWriteFailure(reason: string): void
}

/**
 * Downloads being stored that every client has left, finished anyway (the file is worth having,
 * as nginx finishes a cacheable response); beyond this many at once, such a download is cut.
 */
const MAX_ORPHANED_FILLS = 16

/** The request headers that are evaluated against a stored file, never sent with a fill. */
const CONDITIONAL_HEADERS = new Set(['range', 'if-range', 'if-none-match', 'if-modified-since'])

export class MediaCache {
  readonly #store: DiskStore
  readonly #upstream: UpstreamClient
  readonly #events: CacheEvents
  readonly #fills = new Map<string, Fill>()
  #orphans = 0

  constructor(dir: string, maxBytes: number, upstream: UpstreamClient, events: CacheEvents) {
    this.#store = new DiskStore(dir, maxBytes, events)
    this.#upstream = upstream
    this.#events = events
  }

  get storedBytes(): number {
    return this.#store.storedBytes
  }

  get writable(): boolean {
    return this.#store.writable
  }

  get files(): number {
    return this.#store.size
  }

  get maxBytes(): number {
    return this.#store.maxBytes
  }

  /**
   * Serves a media request (GET, HEAD, or a POST that stores the file) into its sink, and
   * returns what the sink may ask of its body's source.
   */
  open(
    request: UpstreamRequest,
    method: 'GET' | 'HEAD' | 'POST',
    sink: CacheSink,
  ): { source: MediaSource; result: CacheResult } {
    const key = `${request.applicationId}\n${request.origin}${request.path}`
    const hash = this.#store.hashOf(key)
    const stored = this.#store.open(key, hash)
    if (stored) {
      if (method === 'POST') {
        const description = {
          bytes: stored.head.length,
          contentType: stored.head.headers['content-type'] ?? null,
          sha256: this.#store.digestOf(stored),
        }
        closeSync(stored.fd)
        sink.stored(200, description, CACHE_HIT)
        return { source: DONE, result: 'hit' }
      }
      const plan = planResponse(stored.head.headers, stored.head.length, method, conditionsOf(request.headers))
      const reader = new FileReader(
        sink,
        stored.fd,
        stored.bodyOffset,
        plan.start,
        // A HEAD is answered with the headers alone: nothing is read, nothing counted as sent.
        method === 'HEAD' ? plan.start : plan.end,
        undefined,
        stored.bodyStart,
      )
      if (sink.start(plan.status, plan.headers, CACHE_HIT)) reader.run()
      else reader.cancel()
      return { source: reader, result: 'hit' }
    }
    const conditions = conditionsOf(request.headers)
    if (method === 'HEAD' || conditions.ifNoneMatch !== undefined || conditions.ifModifiedSince !== undefined) {
      return { source: this.#upstream.send(request, sink), result: 'bypass' }
    }
    let fill = this.#fills.get(hash)
    const starter = fill === undefined
    if (fill === undefined) {
      fill = new Fill(key, hash, this.#store, {
        onWriteFailure: (reason) => this.#events.onWriteFailure(reason),
        onDone: (done) => {
          if (this.#fills.get(done.hash) === done) this.#fills.delete(done.hash)
          if (done.orphaned) this.#orphans--
        },
        adoptOrphan: () => {
          if (this.#orphans >= MAX_ORPHANED_FILLS) return false
          this.#orphans++
          return true
        },
      })
      this.#fills.set(hash, fill)
    }
    const subscriber =
      method === 'POST'
        ? new FillWaiter(this, fill, request, sink)
        : new FillReader(this, fill, request, conditions, sink, starter)
    fill.subscribe(subscriber, starter)
    if (starter) fill.begin(this.#upstream, { ...request, method: 'GET', headers: withoutConditions(request.headers) })
    return { source: subscriber, result: 'miss' }
  }

  /** Without the cache: the request goes upstream as it came. */
  direct(request: UpstreamRequest, sink: ResponseSink): MediaSource {
    return this.#upstream.send(request, sink)
  }

  /** Shutdown: downloads still being stored are cut, and their temporary files removed. */
  close(): void {
    for (const fill of [...this.#fills.values()]) fill.cancel()
    this.#store.close()
  }
}

/** A source with nothing left to send (a POST answered at once). */
const DONE: MediaSource = { resume() {}, cancel() {}, summary: NO_UPSTREAM }

/**
 * A request waiting on a fill. Its body comes from the file being written, from the fill's
 * upstream response relayed to it (the request that started it, when it is not stored), or from
 * a request of its own; its client going away lets the fill know.
 */
abstract class FillSubscription implements FillSubscriber, MediaSource {
  /** A FileReader, or a request of its own. */
  protected inner: MediaSource | undefined
  /** The fill's upstream response is relayed to this request. */
  protected relayed = false
  protected over = false

  constructor(
    protected readonly cache: MediaCache,
    protected readonly fill: Fill,
    protected readonly request: UpstreamRequest,
    protected readonly sink: CacheSink,
  ) {}

  abstract get summary(): ExchangeSummary

  resume(): void {
    if (this.relayed) this.fill.resumeRelay()
    else this.inner?.resume()
  }

  cancel(): void {
    if (this.over) return
    this.over = true
    if (this.relayed) this.fill.cancelRelay()
    else this.inner?.cancel()
    this.fill.unsubscribe(this)
  }

  failed(problem: ProxyError): void {
    if (!this.over) this.sink.fail(problem)
  }

  abstract storing(fill: Fill): void
  abstract passthrough(starter: boolean): ResponseSink | undefined
  abstract complete(description: StoredDescription): void
  abstract broken(problem: ProxyError): void
}

/** A GET waiting on a fill: reads its part of the file as it is written. */
class FillReader extends FillSubscription {
  readonly #conditions: Conditions
  readonly #starter: boolean

  constructor(
    cache: MediaCache,
    fill: Fill,
    request: UpstreamRequest,
    conditions: Conditions,
    sink: CacheSink,
    starter: boolean,
  ) {
    super(cache, fill, request, sink)
    this.#conditions = conditions
    this.#starter = starter
  }

  get summary(): ExchangeSummary {
    // The request that started the download made the upstream request; the others did not.
    if (this.relayed || this.#starter) return this.fill.summary ?? NO_UPSTREAM
    return this.inner?.summary ?? NO_UPSTREAM
  }

  storing(fill: Fill): void {
    const head = fill.head
    if (!head || this.over) return
    let fd: number
    try {
      fd = openSync(fill.path, 'r')
    } catch (err) {
      this.sink.fail(errors.cacheWriteFailed(err))
      return
    }
    const plan = planResponse(head.headers, head.length, 'GET', this.#conditions)
    const reader = new FileReader(this.sink, fd, fill.bodyOffset, plan.start, plan.end, fill)
    this.inner = reader
    if (this.sink.start(plan.status, plan.headers, CACHE_STORED)) reader.run()
    else reader.cancel()
  }

  passthrough(starter: boolean): ResponseSink | undefined {
    if (this.over) return undefined
    if (starter) {
      this.relayed = true
      return this.sink
    }
    this.inner = this.cache.direct(this.request, this.sink)
    return undefined
  }

  complete(): void {}

  broken(): void {
    // The FileReader finds out from the file, after sending what did reach it.
  }
}

/** A POST waiting on a fill: answered once the file is stored. */
class FillWaiter extends FillSubscription {
  get summary(): ExchangeSummary {
    return this.inner?.summary ?? this.fill.summary ?? NO_UPSTREAM
  }

  storing(): void {}

  passthrough(starter: boolean): ResponseSink | undefined {
    if (this.over) return undefined
    if (!starter) {
      // Another request started it and gets the answer; this one tries again for itself.
      this.inner = this.cache.open(this.request, 'POST', this.sink).source
      return undefined
    }
    const refusal = this.fill.refusal
    if (refusal !== undefined) {
      // A 200 that cannot be stored: it has no Content-Length, or the disk refused it.
      this.sink.fail(refusal === 'no-length' ? errors.notStorable() : errors.cacheWriteFailed())
      return undefined
    }
    // An error (404, 429...) reaches the client as it is.
    this.relayed = true
    return this.sink
  }

  complete(description: StoredDescription): void {
    if (!this.over) this.sink.stored(201, description, CACHE_STORED)
  }

  broken(problem: ProxyError): void {
    if (!this.over) this.sink.fail(problem)
  }
}

/** The conditions of a request, from its forwarded header pairs. */
function conditionsOf(headers: readonly string[]): Conditions {
  const conditions: { -readonly [K in keyof Conditions]: string | undefined } = {}
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1]
    switch (headers[i]) {
      case 'range':
        conditions.range = value
        break
      case 'if-range':
        conditions.ifRange = value
        break
      case 'if-none-match':
        conditions.ifNoneMatch = value
        break
      case 'if-modified-since':
        conditions.ifModifiedSince = value
        break
    }
  }
  return conditions
}

function withoutConditions(headers: readonly string[]): string[] {
  const kept: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string
    if (!CONDITIONAL_HEADERS.has(name)) kept.push(name, headers[i + 1] as string)
  }
  return kept
}
