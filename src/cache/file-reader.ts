// Reads a byte range of a cached file into a response sink: a stored file, or one still being
// written by a fill, whose bytes it follows as they land on disk. The sink's backpressure is
// honoured as an upstream's is (data() false: wait for resume()), so a slow client holds one
// read buffer, never the file.
import { closeSync, read } from 'node:fs'
import { type ExchangeSummary, type MediaSource, NO_UPSTREAM, type ResponseSink } from '../relay/upstream.js'

/** One read: as much as the relay queues for a client before it waits. */
const CHUNK_BYTES = 64 * 1024

/** A file whose body is still arriving. */
export interface GrowingFile {
  /** Body bytes on disk now. */
  available(): number
  /** Set when no more bytes will come although the body is not complete. */
  readonly broken: Error | undefined
  /** Calls the listener once, when more bytes are on disk or the file broke. */
  wait(listener: () => void): void
  unwait(listener: () => void): void
}

export class FileReader implements MediaSource {
  readonly #sink: ResponseSink
  readonly #fd: number
  readonly #bodyOffset: number
  readonly #end: number
  readonly #growing: GrowingFile | undefined
  /** A file asks nothing of the upstream. */
  readonly summary: ExchangeSummary = NO_UPSTREAM
  #position: number
  /** Body bytes [0, n) already read (with the file's header), served without another read. */
  readonly #prefetched: Buffer | undefined
  #paused = false
  #reading = false
  #over = false
  #closed = false

  /** Reads [start, end) of the body at bodyOffset in fd, which it then owns and closes. */
  constructor(
    sink: ResponseSink,
    fd: number,
    bodyOffset: number,
    start: number,
    end: number,
    growing: GrowingFile | undefined,
    prefetched?: Buffer,
  ) {
    this.#prefetched = prefetched
    this.#sink = sink
    this.#fd = fd
    this.#bodyOffset = bodyOffset
    this.#position = start
    this.#end = end
    this.#growing = growing
  }

  /** Starts sending; the sink has been started. */
  run(): void {
    this.#pump()
  }

  readonly resume = (): void => {
    this.#paused = false
    this.#pump()
  }

  cancel(): void {
    if (this.#over) return
    this.#over = true
    this.#growing?.unwait(this.#pump)
    // A read under way closes the file when it comes back.
    if (!this.#reading) this.#close()
  }

  readonly #pump = (): void => {
    if (this.#over || this.#paused || this.#reading) return
    if (this.#position >= this.#end) {
      this.#finish()
      return
    }
    const available = this.#growing ? this.#growing.available() : this.#end
    if (this.#position >= available) {
      const broken = this.#growing?.broken
      if (broken) {
        this.#stop()
        this.#sink.abort(broken)
      } else {
        this.#growing?.wait(this.#pump)
      }
      return
    }
    const prefetched = this.#prefetched
    if (prefetched !== undefined && this.#position < prefetched.length) {
      // A small file's body came with its header: no trip through the thread pool.
      const chunk = prefetched.subarray(this.#position, Math.min(this.#end, prefetched.length))
      this.#position += chunk.length
      const more = this.#sink.data(chunk)
      if (!more && this.#position < this.#end) {
        this.#paused = true
        return
      }
      this.#pump()
      return
    }
    const size = Math.min(CHUNK_BYTES, this.#end - this.#position, available - this.#position)
    // A fresh buffer per read: the last one may still wait in the client's socket.
    const buffer = Buffer.allocUnsafe(size)
    this.#reading = true
    read(this.#fd, buffer, 0, size, this.#bodyOffset + this.#position, (err, bytes) => {
      this.#reading = false
      if (this.#over) {
        this.#close()
        return
      }
      if (err || bytes === 0) {
        this.#stop()
        this.#sink.abort(err ?? new Error('the cached file ended early'))
        return
      }
      this.#position += bytes
      const more = this.#sink.data(bytes === size ? buffer : buffer.subarray(0, bytes))
      if (!more && this.#position < this.#end) {
        this.#paused = true
        return
      }
      this.#pump()
    })
  }

  #finish(): void {
    this.#stop()
    this.#sink.end()
  }

  #stop(): void {
    this.#over = true
    this.#close()
  }

  #close(): void {
    if (this.#closed) return
    this.#closed = true
    closeSync(this.#fd)
  }
}
