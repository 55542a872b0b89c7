// Memory under slow clients: many downloads of a large body, each read at a fixed rate (node
// http clients that pause and resume, so TCP backpressure reaches the server), while the
// servers' resident memory is sampled from /proc.
import { get } from 'node:http'
import { rssBytes } from './processes.js'

export interface SlowReadOptions {
  url: string
  clients: number
  bytesPerSecond: number
  /** Each client stops (destroys its request) after this long, finished or not. */
  maxSeconds: number
}

export interface SlowReadResult {
  clients: number
  /** Clients that received the whole body with status 200. */
  completed: number
  /** Clients that got a non-200 status or an error before their time was up. */
  failed: number
  meanBytesPerClient: number
  meanBytesPerSecondPerClient: number
}

interface ReaderOutcome {
  bytes: number
  seconds: number
  complete: boolean
  failed: boolean
}

function slowReader(options: SlowReadOptions): Promise<ReaderOutcome> {
  return new Promise((resolve) => {
    const started = performance.now()
    let bytes = 0
    let expected = -1
    let stoppedByUs = false
    let resumeTimer: NodeJS.Timeout | undefined
    const settle = (failed: boolean) => {
      clearTimeout(stopTimer)
      clearTimeout(resumeTimer)
      resolve({
        bytes,
        seconds: (performance.now() - started) / 1000,
        complete: !failed && bytes === expected,
        failed: failed && !stoppedByUs,
      })
    }
    const request = get(options.url, { agent: false }, (response) => {
      expected = Number(response.headers['content-length'] ?? -1)
      if (response.statusCode !== 200) {
        response.resume()
        request.destroy()
        settle(true)
        return
      }
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        const aheadMs = (bytes / options.bytesPerSecond) * 1000 - (performance.now() - started)
        if (aheadMs > 1) {
          response.pause()
          resumeTimer = setTimeout(() => response.resume(), aheadMs)
        }
      })
      response.once('end', () => settle(false))
      response.once('error', () => settle(true))
    })
    request.once('error', () => settle(true))
    const stopTimer = setTimeout(() => {
      stoppedByUs = true
      request.destroy()
    }, options.maxSeconds * 1000)
  })
}

export async function slowReaders(options: SlowReadOptions): Promise<SlowReadResult> {
  const outcomes = await Promise.all(Array.from({ length: options.clients }, () => slowReader(options)))
  const totalBytes = outcomes.reduce((sum, outcome) => sum + outcome.bytes, 0)
  const totalRate = outcomes.reduce((sum, outcome) => sum + outcome.bytes / outcome.seconds, 0)
  return {
    clients: options.clients,
    completed: outcomes.filter((outcome) => outcome.complete).length,
    failed: outcomes.filter((outcome) => outcome.failed).length,
    meanBytesPerClient: totalBytes / outcomes.length,
    meanBytesPerSecondPerClient: totalRate / outcomes.length,
  }
}

/** Samples the resident memory of a set of processes until stop() is called; keeps the peak. */
export class RssSampler {
  readonly #pids: readonly number[]
  readonly #timer: NodeJS.Timeout
  #peak = 0

  constructor(pids: readonly number[], intervalMs = 50) {
    this.#pids = pids
    this.#sample()
    this.#timer = setInterval(() => this.#sample(), intervalMs)
  }

  #sample(): void {
    this.#peak = Math.max(this.#peak, rssBytes(this.#pids))
  }

  stop(): number {
    clearInterval(this.#timer)
    this.#sample()
    return this.#peak
  }
}
