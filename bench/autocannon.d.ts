// The part of autocannon's programmatic API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface Options {
    url: string
    connections?: number
    /** Seconds. */
    duration?: number
    /** Stop after this many requests; overrides duration. */
    amount?: number
    /** Seconds. */
    timeout?: number
    pipelining?: number
    headers?: Record<string, string>
    /** Each connection sends these in turn (over url and headers); built once unless dynamic. */
    requests?: RequestOptions[]
  }

  export interface RequestOptions {
    method?: string
    path?: string
    headers?: Record<string, string>
    /** Makes the request dynamic: called before every send with the request to send, returns it changed. */
    setupRequest?: (request: RequestOptions) => RequestOptions
  }

  export interface Histogram {
    average: number
    total: number
    p50: number
    p99: number
  }

  export interface Result {
    /** Seconds. */
    duration: number
    requests: Histogram
    latency: Histogram
    throughput: Histogram
    errors: number
    timeouts: number
    non2xx: number
  }

  export interface Instance extends EventEmitter, PromiseLike<Result> {
    stop(): void
    on(event: 'response', listener: (client: unknown, status: number, bytes: number, ms: number) => void): this
  }

  function autocannon(options: Options): Instance
  export default autocannon
}
