// Where log lines go: stdout, in batches. One write per access line cost about a fifth of a
// small request's CPU, and pino's asynchronous destination (sonic-boom) still cost several
// microseconds a line, mostly waking a thread-pool thread for each batch. Lines are joined and
// written with one synchronous write() once 8 KiB have gathered, within a second otherwise,
// and on flush() before an exit. Synchronous, as Node writes process.stdout to files and pipes.
import { writevSync } from 'node:fs'

const DEFAULT_BATCH_BYTES = 8 * 1024
const DEFAULT_FLUSH_INTERVAL_MS = 1_000
/** If stdout stops taking lines (a stuck pipe), at most this much waits; newer lines are dropped. */
const MAX_PENDING_BYTES = 16 * 1024 * 1024
const MAX_BATCHES = 64

export interface LogDestinationOptions {
  fd?: number
  batchBytes?: number
  flushIntervalMs?: number
}

export class LogDestination {
  readonly #fd: number
  readonly #batchBytes: number
  readonly #timer: NodeJS.Timeout
  #lines: string[] = []
  #length = 0
  /** Joined but not yet written: the rest of a partial write, or batches refused with EAGAIN. */
  #unwritten: Buffer[] = []
  #unwrittenBytes = 0
  /** stdout answered EAGAIN: until the timer retries, lines only gather (no copying per line). */
  #blocked = false
  #closed = false

  constructor(options: LogDestinationOptions = {}) {
    this.#fd = options.fd ?? 1
    this.#batchBytes = options.batchBytes ?? DEFAULT_BATCH_BYTES
    this.#timer = setInterval(() => this.flush(), options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS)
    this.#timer.unref()
  }

  /** pino's destination interface: one serialised line, newline included. */
  write(line: string): void {
    if (this.#length + this.#unwrittenBytes > MAX_PENDING_BYTES) return
    this.#lines.push(line)
    this.#length += line.length
    if ((this.#length >= this.#batchBytes && !this.#blocked) || this.#closed) this.flush()
  }

  /** Writes what has gathered, now. */
  flush(): void {
    if (this.#lines.length > 0) {
      const batch = Buffer.from(this.#lines.join(''))
      this.#lines = []
      this.#length = 0
      // Rarely more than one: only while stdout refuses lines. Kept well under IOV_MAX (1024).
      if (this.#unwritten.length >= MAX_BATCHES) this.#unwritten = [Buffer.concat(this.#unwritten)]
      this.#unwritten.push(batch)
      this.#unwrittenBytes += batch.length
    }
    this.#blocked = false
    while (this.#unwrittenBytes > 0) {
      let written: number
      try {
        written = writevSync(this.#fd, this.#unwritten)
      } catch (err) {
        // A non-blocking pipe that is full: keep the lines for the timer's next try.
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          this.#blocked = true
          return
        }
        // Closed or broken (EPIPE, EBADF): nowhere to write them.
        this.#unwritten = []
        this.#unwrittenBytes = 0
        return
      }
      this.#dropWritten(written)
    }
  }

  #dropWritten(bytes: number): void {
    this.#unwrittenBytes -= bytes
    while (bytes > 0) {
      const first = this.#unwritten[0] as Buffer
      if (first.length > bytes) {
        this.#unwritten[0] = first.subarray(bytes)
        return
      }
      bytes -= first.length
      this.#unwritten.shift()
    }
  }

  /** Stops the timer and writes the rest; later lines are written at once. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    this.flush()
  }
}
