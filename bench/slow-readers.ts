// Memory under slow clients: many downloads of a large body, each read at a fixed rate (node
// http clients that pause and resume, so TCP backpressure reaches the server), while the
// servers' resident memory is sampled from /proc. Every client's socket is destroyed by the
// time slowReaders() resolves: at the end of its body, on an error, or at the deadline.
// For a thousand at once, slowClients() runs bench/slow_clients.py instead (small receive
// buffers and MSS, which Node cannot set), and the kernel's share is read from /proc and ss.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { get } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { commandExists, LOAD_CORE, type ProcessGroup, rssBytes } from './processes.js'

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

const SLOW_CLIENTS_SCRIPT = fileURLToPath(new URL('./slow_clients.py', import.meta.url))
/** What each client asks for before it connects: the kernel doubles the buffer (8 KiB), the MSS is Ethernet's. */
const CLIENT_RECEIVE_BUFFER_BYTES = 4096
const CLIENT_MSS_BYTES = 1460

export interface SlowClientsOptions {
  group: ProcessGroup
  /** Where the script's output and progress lines go. */
  dir: string
  url: string
  clients: number
  bytesPerSecond: number
  maxSeconds: number
  rampSeconds: number
}

export interface SlowClientsResult extends SlowReadResult {
  /** Clients reading a body at once, the most (the clients' own count). */
  peakReading: number
  receiveBufferBytes: number | undefined
  mssBytes: number | undefined
}

export interface RunningSlowClients {
  /** Ends every client now; the result still comes. */
  stop(): void
  readonly result: Promise<SlowClientsResult>
}

/** Whether slowClients() can run here: python3 on the PATH. */
export function slowClientsAvailable(): boolean {
  return commandExists('python3', ['--version'])
}

/** Starts bench/slow_clients.py on the load core; its JSON summary resolves result. */
export function slowClients(options: SlowClientsOptions): RunningSlowClients {
  const stdoutFile = join(options.dir, 'slow-clients-stdout.log')
  const stderrFile = join(options.dir, 'slow-clients-stderr.log')
  const child = options.group.spawn(
    'slow-clients',
    'python3',
    [
      SLOW_CLIENTS_SCRIPT,
      '--url',
      options.url,
      '--clients',
      String(options.clients),
      '--bytes-per-second',
      String(options.bytesPerSecond),
      '--seconds',
      String(options.maxSeconds),
      '--ramp-seconds',
      String(options.rampSeconds),
      '--rcvbuf',
      String(CLIENT_RECEIVE_BUFFER_BYTES),
      '--mss',
      String(CLIENT_MSS_BYTES),
    ],
    { core: LOAD_CORE, stdoutFile, stderrFile },
  )
  const result = child.exited.then((code) => {
    const text = readFileSync(stdoutFile, 'utf8').trim()
    if (code !== 0 || text === '') {
      const stderr = readFileSync(stderrFile, 'utf8').trim().split('\n').slice(-5).join('\n')
      throw new Error(`slow_clients.py exited with ${code}: ${stderr}`)
    }
    return JSON.parse(text) as SlowClientsResult
  })
  // The script ends its clients on SIGTERM and still prints what they got.
  return { stop: () => child.process.kill('SIGTERM'), result }
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

/** net.ipv4.tcp_mem's middle value (in bytes): past it the kernel squeezes every TCP socket on the machine. */
export function kernelTcpPressureBytes(): number | undefined {
  try {
    const pages = Number(readFileSync('/proc/sys/net/ipv4/tcp_mem', 'utf8').trim().split(/\s+/)[1])
    return Number.isFinite(pages) ? pages * PAGE_BYTES : undefined
  } catch {
    return undefined
  }
}

/**
 * Kernel memory of the established TCP sockets an ss filter selects (`sport = :8080`): what is
 * queued to send and received but not read (skmem's w and r), summed; undefined without ss.
 */
export function socketBufferBytes(filter: string): number | undefined {
  const result = spawnSync('ss', ['-tmnH', 'state', 'established', filter], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  })
  if (result.error || result.status !== 0) return undefined
  let total = 0
  for (const match of result.stdout.matchAll(/skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+)/g)) {
    total += Number(match[1]) + Number(match[2])
  }
  return total
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
