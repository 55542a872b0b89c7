// Prometheus metrics, on a registry owned by one app instance (prom-client's default
// registry would throw when tests build the app twice). Labels are route templates, status
// codes and fixed reasons only: never an id, an address or a raw URL.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { RefreshResult, Token } from './token-cache.js'
import type { RetryReason } from './upstream.js'

/** Up to ten minutes: a large download through a slow client is long, not broken. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30]

export type KeyReloadResult = 'success' | 'failure'

interface RequestSeries {
  requests: Counter.Internal
  duration: Histogram.Internal<'method' | 'route' | 'status'>
}

export class Metrics {
  readonly registry = new Registry()
  readonly #requests = new Counter({
    name: 'media_proxy_requests_total',
    help: 'Requests answered on the media port.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  })
  readonly #duration = new Histogram({
    name: 'media_proxy_request_duration_seconds',
    help: 'Time from request received to response finished (or aborted).',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  })
  readonly #upstreamLatency = new Histogram({
    name: 'media_proxy_upstream_latency_seconds',
    help: 'Time from request sent upstream to upstream response headers, per upstream response.',
    labelNames: ['status'] as const,
    buckets: UPSTREAM_BUCKETS,
    registers: [this.registry],
  })
  readonly #responseBytes = new Counter({
    name: 'media_proxy_response_bytes_total',
    help: 'Body bytes sent to clients.',
    labelNames: ['route'] as const,
    registers: [this.registry],
  })
  readonly #retries = new Counter({
    name: 'media_proxy_upstream_retries_total',
    help: 'Upstream requests retried, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly #tokenRefreshes = new Counter({
    name: 'media_proxy_token_refreshes_total',
    help: 'Application JWT signing attempts, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly #tokenExpiry = new Gauge({
    name: 'media_proxy_token_expiry_timestamp_seconds',
    help: 'Expiry (exp claim, Unix seconds) of the newest application JWT.',
    registers: [this.registry],
  })
  readonly #keyReloads = new Counter({
    name: 'media_proxy_key_reloads_total',
    help: 'Private key file reloads, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  constructor(version: string, inFlight: () => number, maxInFlight: number) {
    collectDefaultMetrics({ register: this.registry })
    new Gauge({
      name: 'media_proxy_in_flight_requests',
      help: 'Media requests being served now.',
      registers: [this.registry],
      collect() {
        this.set(inFlight())
      },
    })
    new Gauge({
      name: 'media_proxy_max_in_flight_requests',
      help: 'MAX_IN_FLIGHT_REQUESTS: media requests served at once before new ones get 503.',
      registers: [this.registry],
    }).set(maxInFlight)
    new Gauge({
      name: 'media_proxy_build_info',
      help: 'Always 1; the version label says which build runs.',
      labelNames: ['version'] as const,
      registers: [this.registry],
    }).set({ version }, 1)
    for (const result of ['success', 'failure'] as const) {
      this.#tokenRefreshes.inc({ result }, 0)
      this.#keyReloads.inc({ result }, 0)
    }
  }

  /** Child series looked up once per label set, not per request (the label sets are bounded). */
  readonly #requestSeries = new Map<string, RequestSeries>()
  readonly #bytesSeries = new Map<string, Counter.Internal>()
  readonly #upstreamSeries = new Map<number, Histogram.Internal<'status'>>()

  observeRequest(method: string, route: string, status: number, seconds: number, bytes: number): void {
    const key = `${method} ${route} ${status}`
    let series = this.#requestSeries.get(key)
    if (!series) {
      const labels = { method, route, status: String(status) }
      series = { requests: this.#requests.labels(labels), duration: this.#duration.labels(labels) }
      this.#requestSeries.set(key, series)
    }
    series.requests.inc()
    series.duration.observe(seconds)
    if (bytes > 0) {
      let sent = this.#bytesSeries.get(route)
      if (!sent) {
        sent = this.#responseBytes.labels({ route })
        this.#bytesSeries.set(route, sent)
      }
      sent.inc(bytes)
    }
  }

  observeUpstream(status: number, seconds: number): void {
    let series = this.#upstreamSeries.get(status)
    if (!series) {
      series = this.#upstreamLatency.labels({ status: String(status) })
      this.#upstreamSeries.set(status, series)
    }
    series.observe(seconds)
  }

  countRetry(reason: RetryReason): void {
    this.#retries.inc({ reason })
  }

  countTokenRefresh(result: RefreshResult, token: Token | undefined): void {
    this.#tokenRefreshes.inc({ result })
    if (token) this.#tokenExpiry.set(token.exp)
  }

  countKeyReload(result: KeyReloadResult): void {
    this.#keyReloads.inc({ result })
  }

  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
