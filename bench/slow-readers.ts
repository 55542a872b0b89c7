// Memory under slow clients: many downloads of a large body, each read at a fixed rate (node
// http clients that pause and resume, so TCP backpressure reaches the server), while the
// servers' resident memory is sampled from /proc. Every client's socket is destroyed by the
// time slowReaders() resolves: at the end of its body, on an error, or at the deadline.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { get } from 'node:http'
import { rssBytes } from './processes.js'

export interface SlowReadOptions {
  url: string
  clients: number
  bytesPerSecond: number
  /** Every client stops (destroys its request) this long after the run started, finished or not. */
  maxSeconds: number
  /** Clients start evenly spread over this many seconds (default 0: all at once). */
  rampSeconds?: number
  /** The body's length, for responses without a Content-Length (a close-delimited upstream). */
  expectedBytes?: number
}

export interface SlowReadResult {
  clients: number
  /** Clients that received the whole body with status 200. */
  completed: number
  /** Clients that got a non-200 status or an error before their time was up. */
  failed: number
  /** Why those failed: a status code or an error code, and how many clients each. */
  failures: Record<string, number>
  /** Clients that got response headers (status 200) before their time was up. */
  responded: number
  meanBytesPerClient: number
  meanBytesPerSecondPerClient: number
}

interface ReaderOutcome {
  bytes: number
  seconds: number
  complete: boolean
  responded: boolean
  /** Why the client failed (status or error code), or undefined. */
  failure: string | undefined
}

function slowReader(options: SlowReadOptions, startDelayMs: number, deadline: number): Promise<ReaderOutcome> {
  return new Promise((resolve) => {
    let started = performance.now()
    let bytes = 0
    let expected = options.expectedBytes ?? -1
    let responded = false
    let stoppedByUs = false
    let settled = false
    let resumeTimer: NodeJS.Timeout | undefined
    let request: ReturnType<typeof get> | undefined
    const settle = (failure: string | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(startTimer)
      clearTimeout(stopTimer)
      clearTimeout(resumeTimer)
      // Whatever ended the client, its socket goes now.
      request?.destroy()
      resolve({
        bytes,
        seconds: Math.max(1e-3, (performance.now() - started) / 1000),
        complete: failure === undefined && bytes === expected,
        responded,
        failure: stoppedByUs ? undefined : failure,
      })
    }
    const startTimer = setTimeout(() => {
      started = performance.now()
      request = get(options.url, { agent: false }, (response) => {
        const length = response.headers['content-length']
        if (length !== undefined) expected = Number(length)
        if (response.statusCode !== 200) {
          response.resume()
          settle(String(response.statusCode))
          return
        }
        responded = true
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          const aheadMs = (bytes / options.bytesPerSecond) * 1000 - (performance.now() - started)
          if (aheadMs > 1) {
            response.pause()
            resumeTimer = setTimeout(() => response.resume(), aheadMs)
          }
        })
        response.once('end', () => settle(response.complete ? undefined : 'aborted'))
        response.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? 'error'))
      })
      request.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? 'error'))
    }, startDelayMs)
    const stopTimer = setTimeout(
      () => {
        stoppedByUs = true
        settle('stopped')
      },
      Math.max(0, deadline - performance.now()),
    )
  })
}

export async function slowReaders(options: SlowReadOptions): Promise<SlowReadResult> {
  const deadline = performance.now() + options.maxSeconds * 1000
  const rampMs = (options.rampSeconds ?? 0) * 1000
  const outcomes = await Promise.all(
    Array.from({ length: options.clients }, (_, i) => slowReader(options, (rampMs * i) / options.clients, deadline)),
  )
  const totalBytes = outcomes.reduce((sum, outcome) => sum + outcome.bytes, 0)
  const totalRate = outcomes.reduce((sum, outcome) => sum + outcome.bytes / outcome.seconds, 0)
  const failures: Record<string, number> = {}
  for (const { failure } of outcomes) if (failure !== undefined) failures[failure] = (failures[failure] ?? 0) + 1
  return {
    clients: options.clients,
    completed: outcomes.filter((outcome) => outcome.complete).length,
    failed: outcomes.filter((outcome) => outcome.failure !== undefined).length,
    failures,
    responded: outcomes.filter((outcome) => outcome.responded).length,
    meanBytesPerClient: totalBytes / outcomes.length,
    meanBytesPerSecondPerClient: totalRate / outcomes.length,
  }
}

/** This process's soft limit on open files (children inherit it), from /proc; undefined off Linux. */
export function openFilesLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    if (!match) return undefined
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1])
  } catch {
    return undefined
  }
}

const PAGE_BYTES = (() => {
  const bytes = Number(spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).stdout?.trim())
  return Number.isInteger(bytes) && bytes > 0 ? bytes : 4096
})()

/**
 * Memory the kernel holds in TCP socket buffers, machine-wide ("TCP: ... mem" of /proc/net/sockstat,
 * in pages); 0 off Linux. Not part of any process's RSS, but a cgroup v2 memory limit counts it.
 */
export function kernelTcpBytes(): number {
  try {
    const match = /^TCP:.*\bmem (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'))
    return Number(match?.[1] ?? 0) * PAGE_BYTES
  } catch {
    return 0
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
